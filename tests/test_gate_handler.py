"""Handover gate handler with stubbed EC2 and S3; reports are produced by the real burn-in runner."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from tests.burnin.fakes import FakeHost, healthy_result
from trn_burnin.catalog import CATALOG
from trn_burnin.runner import RunOptions, run_burnin
from trn_burnin.verdict import Thresholds
from trn_constructs.validation.handler import index

RESERVATION = "cr-0123456789abcdef0"
BUCKET = "trn-kit-reports"
PREFIX = "burn-in/TrnClusterStack/"
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
REQUEST_ID = "5f2c7a9e-0000-4000-8000-000000000001"


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
        running instance read."""
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
            if instance not in self.instance_ids:
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


def poll(props=None, deadline=T0 + timedelta(hours=1)):
    return index.is_complete(
        {
            "RequestType": "Create",
            "RequestId": REQUEST_ID,
            "ResourceProperties": props or properties(),
            "Data": {"Deadline": deadline.isoformat()},
        }
    )


def test_on_event_records_the_deadline(monkeypatch):
    monkeypatch.setattr(index, "now", lambda: T0)
    response = index.on_event({"RequestType": "Create", "ResourceProperties": properties()})
    assert response == {
        "PhysicalResourceId": f"handover-gate-{RESERVATION}",
        "Data": {"Deadline": "2026-11-22T09:00:00+00:00"},
    }


def test_delete_waits_for_nothing():
    event = {"RequestType": "Delete", "ResourceProperties": properties(), "PhysicalResourceId": "g"}
    assert index.on_event(event) == {"PhysicalResourceId": "g"}
    assert index.is_complete(event) == {"IsComplete": True}


def test_all_nodes_pass(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0),
            ("i-0bbb-20261122T081000Z.json", body(report("i-0bbb")), T0),
        )
        result = poll()
    assert result["IsComplete"] is True
    # Each fake core reports 60 TFLOPS against 78.6 TFLOPS peak per NeuronCore-v3.
    assert result["Data"] == {
        "Summary": "2/2 nodes passed the burn-in (policy 100%); "
        "median chip throughput 76.3% of peak. Cluster all-reduce not run: clusterTest is false",
        "ReportLocation": f"s3://{BUCKET}/{PREFIX}",
    }


def test_one_failed_node_fails_the_deploy_naming_node_and_reason(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0),
            ("i-0bbb-20261122T081000Z.json", body(report("i-0bbb", slow_core=5)), T0),
        )
        with pytest.raises(index.GateFailed) as failed:
            poll()
    message = str(failed.value)
    assert message.startswith("Burn-in gate failed: 1/2 nodes passed the burn-in (policy 100%)")
    assert "Failed nodes: i-0bbb: " in message
    assert "core 5" in message
    assert "i-0aaa:" not in message


def test_waits_while_a_report_is_missing_before_the_deadline(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0))
        assert poll() == {"IsComplete": False}


def test_missing_report_at_the_deadline_names_the_node(monkeypatch):
    with Aws(monkeypatch, T0 + timedelta(hours=2)) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0))
        with pytest.raises(index.GateFailed, match="i-0bbb: no report before the deadline"):
            poll()


def test_malformed_report_fails_that_node(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0),
            ("i-0bbb-20261122T081000Z.json", b"{not json", T0),
        )
        with pytest.raises(index.GateFailed) as failed:
            poll()
    assert f"i-0bbb: unreadable report s3://{BUCKET}/{PREFIX}i-0bbb-20261122T081000Z.json" in str(
        failed.value
    )


def test_policy_below_one_accepts_a_failed_node_and_says_so(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0),
            ("i-0bbb-20261122T081000Z.json", body(report("i-0bbb", slow_core=5)), T0),
        )
        result = poll(properties(MinHealthyFraction="0.5"))
    summary = result["Data"]["Summary"]
    assert summary.startswith("1/2 nodes passed the burn-in (policy 50%)")
    assert ". Accepted failures: i-0bbb: " in summary


def test_newest_report_wins_and_reports_of_gone_instances_are_ignored(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(
            ("i-0aaa-20261122T070000Z.json", body(report("i-0aaa", slow_core=1)), T0 - timedelta(hours=1)),
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0),
            ("i-0bbb-20261122T081000Z.json", body(report("i-0bbb")), T0),
            ("i-0ccc-20261122T081000Z.json", body(report("i-0ccc", slow_core=2)), T0),
        )
        assert poll()["Data"]["Summary"].startswith("2/2 nodes passed")


def test_too_few_instances_at_the_deadline_fails(monkeypatch):
    with Aws(monkeypatch, T0 + timedelta(hours=2)) as aws:
        aws.running("i-0aaa")
        aws.reports(("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0))
        with pytest.raises(index.GateFailed, match="only 1 of 2 instances were running"):
            poll()
