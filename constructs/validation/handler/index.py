"""Handover gate: the deploy completes only when every Trainium node's burn-in report says pass.

CDK Provider framework handlers:
- ``on_event`` records the deadline (now + TimeoutSeconds) and returns at once;
- ``is_complete`` runs every poll: it asks EC2 which instances run in the Capacity Block, reads the
  newest burn-in report of each from S3, and decides.

Decision: once every running instance has a report, the gate passes when
``passed / ExpectedNodes >= MinHealthyFraction`` and fails otherwise, naming each failed node and
its reasons. At the deadline, nodes without a report count as failed ("no report") and the same
rule applies, so a policy below 1.0 can still hand over a cluster with a straggler.

The gate only reads: it never stops, deletes or buys anything.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3

REPORT_SCHEMA_VERSION = 1
MAX_REASONS_PER_NODE = 3
# trn_burnin.publish names each report <instance id>-<UTC timestamp>.json under the prefix.
REPORT_KEY = re.compile(r"(?P<instance>i-[0-9a-f]+)-[^/]+\.json")


def client(service: str) -> Any:
    """The one place clients are made; tests replace it to hand in stubbed clients."""
    return boto3.client(service)


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class GateSettings:
    bucket: str
    prefix: str
    reservation_id: str
    expected_nodes: int
    min_healthy_fraction: float
    timeout_seconds: int

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> "GateSettings":
        prefix = props["ReportsPrefix"]
        return cls(
            bucket=props["ReportsBucket"],
            prefix=prefix if prefix.endswith("/") else prefix + "/",
            reservation_id=props["CapacityReservationId"],
            expected_nodes=int(props["ExpectedNodes"]),
            min_healthy_fraction=float(props["MinHealthyFraction"]),
            timeout_seconds=int(props["TimeoutSeconds"]),
        )

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class NodeOutcome:
    instance_id: str
    passed: bool
    reasons: tuple[str, ...]
    chip_fractions_of_peak: tuple[float, ...] = ()

    def describe(self) -> str:
        return f"{self.instance_id}: " + "; ".join(self.reasons[:MAX_REASONS_PER_NODE])


def on_event(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    request = event["RequestType"]
    settings = GateSettings.from_properties(event["ResourceProperties"])
    physical_id = event.get("PhysicalResourceId") or f"handover-gate-{settings.reservation_id}"
    if request == "Delete":
        return {"PhysicalResourceId": physical_id}
    deadline = now() + timedelta(seconds=settings.timeout_seconds)
    print(f"{request}: waiting for {settings.expected_nodes} burn-in reports in {settings.location}")
    return {"PhysicalResourceId": physical_id, "Data": {"Deadline": deadline.isoformat()}}


def is_complete(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return {"IsComplete": True}
    settings = GateSettings.from_properties(event["ResourceProperties"])
    deadline = datetime.fromisoformat(event["Data"]["Deadline"])
    instances = running_instances(settings.reservation_id)
    outcomes = newest_outcomes(settings, instances)
    missing = sorted(instances - set(outcomes))
    waiting_for_nodes = len(instances) < settings.expected_nodes
    if (missing or waiting_for_nodes) and now() < deadline:
        print(
            f"{len(outcomes)} of {settings.expected_nodes} reports in; "
            f"{len(instances)} instances running; waiting until {deadline.isoformat()}"
        )
        return {"IsComplete": False}
    for instance_id in missing:
        outcomes[instance_id] = NodeOutcome(instance_id, False, ("no report before the deadline",))
    return {"IsComplete": True, "Data": decide(settings, list(outcomes.values()), len(instances))}


def running_instances(reservation_id: str) -> set[str]:
    """Instances currently running (or starting) in the Capacity Block."""
    ec2 = client("ec2")
    found: set[str] = set()
    kwargs: dict[str, Any] = {
        "Filters": [
            {"Name": "capacity-reservation-id", "Values": [reservation_id]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    }
    while True:
        page = ec2.describe_instances(**kwargs)
        for reservation in page["Reservations"]:
            found.update(instance["InstanceId"] for instance in reservation["Instances"])
        if not page.get("NextToken"):
            return found
        kwargs["NextToken"] = page["NextToken"]


def newest_outcomes(settings: GateSettings, instances: set[str]) -> dict[str, NodeOutcome]:
    """The newest report of each of ``instances`` (a re-run writes a newer one); others are stale."""
    s3 = client("s3")
    newest: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"Bucket": settings.bucket, "Prefix": settings.prefix}
    while True:
        page = s3.list_objects_v2(**kwargs)
        for item in page.get("Contents", []):
            match = REPORT_KEY.fullmatch(item["Key"][len(settings.prefix):])
            if not match:
                continue
            instance_id = match["instance"]
            if instance_id not in instances:
                continue
            if instance_id not in newest or item["LastModified"] > newest[instance_id]["LastModified"]:
                newest[instance_id] = item
        if not page.get("IsTruncated"):
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    return {
        instance_id: read_outcome(s3, settings.bucket, item["Key"], instance_id)
        for instance_id, item in newest.items()
    }


def read_outcome(s3: Any, bucket: str, key: str, instance_id: str) -> NodeOutcome:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        report = json.loads(body)
        if report.get("schema_version") != REPORT_SCHEMA_VERSION:
            raise ValueError(f"schema_version {report.get('schema_version')!r}")
        verdict = report["verdict"]
        peak_per_chip = (
            report["thresholds"]["peak_tflops_per_core"] * report["expected"]["cores_per_device"]
        )
        fractions = tuple(chip["tflops"] / peak_per_chip for chip in report["chips"])
        reasons = tuple(failure["message"] for failure in verdict["failures"])
        return NodeOutcome(instance_id, bool(verdict["passed"]), reasons or ("passed",), fractions)
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as error:
        return NodeOutcome(
            instance_id, False, (f"unreadable report s3://{bucket}/{key} ({error})",)
        )


def decide(settings: GateSettings, outcomes: list[NodeOutcome], running: int) -> dict[str, str]:
    passed = [o for o in outcomes if o.passed]
    failed = sorted((o for o in outcomes if not o.passed), key=lambda o: o.instance_id)
    healthy_fraction = len(passed) / settings.expected_nodes
    fractions = [f for o in passed for f in o.chip_fractions_of_peak]
    median = f"{100 * statistics.median(fractions):.1f}%" if fractions else "n/a"
    summary = (
        f"{len(passed)}/{settings.expected_nodes} nodes passed the burn-in "
        f"(policy {settings.min_healthy_fraction:.0%}); median chip throughput {median} of peak"
    )
    if running < settings.expected_nodes:
        summary += f"; only {running} of {settings.expected_nodes} instances were running"
    if healthy_fraction < settings.min_healthy_fraction or not passed:
        details = " | ".join(o.describe() for o in failed)
        raise GateFailed(f"Burn-in gate failed: {summary}. Failed nodes: {details}. "
                         f"Reports: {settings.location}")
    if failed:
        summary += ". Accepted failures: " + " | ".join(o.describe() for o in failed)
    print(summary)
    return {"Summary": summary, "ReportLocation": settings.location}


class GateFailed(RuntimeError):
    """Raised to fail the deploy; the Provider framework puts the message in the stack event."""

