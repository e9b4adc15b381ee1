"""Stubbed AWS for the handover gate handler's tests; node reports come from the real burn-in
runner driven by the burn-in's fake host."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import boto3
from botocore.response import StreamingBody
from botocore.stub import Stubber

from tests.burnin.fakes import FakeHost, healthy_result
from trn_burnin.catalog import CATALOG
from trn_burnin.runner import RunOptions, run_burnin
from trn_burnin.thresholds import Thresholds
from trn_constructs.validation.handler import index

RESERVATION = "cr-0123456789abcdef0"
BUCKET = "trn-kit-reports"
PREFIX = "burn-in/TrnClusterStack/"
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
REQUEST_ID = "5f2c7a9e-0000-4000-8000-000000000001"
# What report() nodes are judged by, as the gate's summary names it.
RULES = "cores >= 70% of the 78.6 TFLOPS bf16 peak and >= 90% of their node's median"


def properties(**overrides):
    return {
        "ReportsBucket": BUCKET,
        "ReportsPrefix": PREFIX,
        "CapacityReservationId": RESERVATION,
        "ExpectedNodes": "2",
        "MinHealthyFraction": "1.0",
        "TimeoutSeconds": "3600",
        "ClusterTestSkipped": "clusterTest is false",
        **overrides,
    }


def report(instance_id: str, slow_core: int | None = None) -> dict:
    """A report as a trn2.48xlarge node writes it; ``slow_core`` runs at a third of its peers."""
    host = FakeHost()
    if slow_core is not None:
        host.overrides[slow_core] = healthy_result(slow_core, slow_core // 8, tflops=20.0)
    options = RunOptions(
        spec=CATALOG["trn2"], instance_id=instance_id, ultraserver_id=None, dtype="bf16",
        shape=(4096, 4096, 4096), repeat=4, warmup_s=30, duration_s=180, sample_tiles=4, seed=1,
        thresholds=Thresholds.for_dtype("bf16"),
    )
    return run_burnin(options, host, now=lambda: "2026-11-22T08:10:00Z")


class Aws:
    """Stubbed EC2 and S3 clients handed to the handler through its client factory."""

    def __init__(self, monkeypatch, at: datetime):
        clients = {name: boto3.client(name, region_name="us-east-2") for name in ("ec2", "s3", "ssm")}
        self.s3 = clients["s3"]
        self.stubs = {name: Stubber(c) for name, c in clients.items()}
        monkeypatch.setattr(index, "client", clients.__getitem__)
        monkeypatch.setattr(index, "now", lambda: at)

    def running(self, *instance_ids: str) -> None:
        self.instance_ids = set(instance_ids)
        self.stubs["ec2"].add_response(
            "describe_instances",
            {"Reservations": [{"Instances": [{"InstanceId": i} for i in instance_ids]}]},
            {
                "Filters": [
                    {"Name": "capacity-reservation-id", "Values": [RESERVATION]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]},
                ]
            },
        )

    def reports(self, *objects: tuple[str, bytes, datetime]) -> None:
        """``objects``: (key below the prefix, body, last modified); all listed, the newest of each
        running instance read, and of each gone one whose report came after the gate started
        (T0 for ``poll()``'s one-hour deadline)."""
        self.stubs["s3"].add_response(
            "list_objects_v2",
            {
                "IsTruncated": False,
                "Contents": [
                    {"Key": PREFIX + key, "LastModified": modified, "Size": len(body)}
                    for key, body, modified in objects
                ],
            },
            {"Bucket": BUCKET, "Prefix": PREFIX},
        )
        newest = {}
        for key, body, modified in objects:
            instance = key.rsplit("-", 1)[0]
            if instance not in self.instance_ids and modified < T0:
                continue
            if instance not in newest or modified > newest[instance][2]:
                newest[instance] = (key, body, modified)
        for key, body, _ in newest.values():
            self.stubs["s3"].add_response(
                "get_object",
                {"Body": StreamingBody(io.BytesIO(body), len(body))},
                {"Bucket": BUCKET, "Key": PREFIX + key},
            )

    def __enter__(self):
        for stub in self.stubs.values():
            stub.activate()
        return self

    def __exit__(self, *exc):
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()
            stub.deactivate()


def body(document: dict) -> bytes:
    return json.dumps(document).encode()


def result(passed: bool, measured: float | None, failures=()) -> bytes:
    """The fields of trn_burnin's cluster-test result document that the gate reads."""
    return body({
        "schema_version": 1,
        "nodes": 2,
        "bus_bandwidth_gibps": measured,
        "threshold": {"min_bus_bandwidth_gibps": 93.13, "fraction": 0.25,
                      "efa_gbps_per_instance": 3200},
        "verdict": {"passed": passed, "failures": [{"message": m} for m in failures]},
    })


def poll(props=None, deadline=T0 + timedelta(hours=1)):
    return index.is_complete(
        {
            "RequestType": "Create",
            "RequestId": REQUEST_ID,
            "ResourceProperties": props or properties(),
            "Data": {"Deadline": deadline.isoformat()},
        }
    )


def nodes_report(aws: Aws, *, passed: tuple[str, ...], slow: tuple[str, ...] = ()) -> None:
    """``passed`` and ``slow`` instances run; each wrote one report at T0, a ``slow`` one with
    core 5 at a third of its peers (a failure)."""
    aws.running(*passed, *slow)
    aws.reports(*(
        (f"{i}-20261122T081000Z.json", body(report(i, slow_core=5 if i in slow else None)), T0)
        for i in (*passed, *slow)
    ))
