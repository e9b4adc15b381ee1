"""The handover's second stage, the same on both orchestrators: one all-reduce across the nodes that
passed (trn_burnin cluster-test), started once behind a marker and judged from the result it
writes under ``cluster-test/<run id>/``. How it starts is the orchestrator's (nodes.NodeOperations)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Protocol

from botocore.exceptions import ClientError

from trn_burnin import report_check

from . import aws
from .aws import iso
from .ledger import LOST_RACE

RESULT_NAME = "result.json"
MARKER_NAME = "launch.json"


@dataclass(frozen=True)
class ClusterRun:
    bucket: str
    prefix: str  # cluster-test/<run id>/
    run_id: str
    nodes: int
    deadline: datetime  # the stage's; the run's pods or job must be done by then

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"


@dataclass(frozen=True)
class StageResult:
    passed: bool
    summary: str


class ClusterTestRunner(Protocol):
    """What each orchestrator does for the stage."""

    def submit(self, run: ClusterRun) -> dict[str, str]:
        """Start the all-reduce; returns what to keep in the marker (e.g. the command id)."""

    def submission_problem(self, run: ClusterRun, marker: dict[str, Any]) -> str | None:
        """Why the submitted run cannot produce a result (it failed to start); None: it may."""

    def where_to_look(self, run: ClusterRun, present: set[str], marker: dict[str, Any]) -> str:
        """How far the run got and where its logs are, for a message at the deadline."""


@cache
def _result_schema() -> dict[str, Any]:
    return report_check.load_schema(report_check.SCHEMA_PATH.with_name("cluster_test_schema.json"))


def listed_keys(s3: Any, bucket: str, prefix: str) -> set[str]:
    """Listed rather than fetched blind: a role that may list only under a prefix gets 403, not
    404, for a missing key."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def read_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def judge(document: Any, uri: str) -> StageResult:
    problems = report_check.validate_report(document, _result_schema())
    if problems:
        return StageResult(False, f"Cluster test result {uri} is unreadable ({'; '.join(problems[:3])})")
    verdict = document["verdict"]
    failures = [failure["message"] for failure in verdict["failures"]]
    if verdict["passed"] and document["bus_bandwidth_gibps"] is None:
        return StageResult(False, f"Cluster test result {uri} is unreadable (it passes without a measurement)")
    if verdict["passed"] and not failures:
        return StageResult(True, (
            f"Cluster all-reduce across {document['nodes']} nodes: "
            f"{document['bus_bandwidth_gibps']:.1f} GiB/s bus bandwidth "
            f"(floor {document['threshold']['min_bus_bandwidth_gibps']:.1f} GiB/s)"
        ))  # fmt: skip
    reasons = "; ".join(failures) or "the result says it failed without a reason"
    return StageResult(False, f"Cluster test failed: {reasons}. Result: {uri}")


def advance(s3: Any, runner: ClusterTestRunner, run: ClusterRun) -> StageResult | None:
    """The stage's verdict, or None while it runs."""
    present = listed_keys(s3, run.bucket, run.prefix)
    result_key, marker_key = run.prefix + RESULT_NAME, run.prefix + MARKER_NAME
    if result_key in present:
        try:
            document = read_json(s3, run.bucket, result_key)
        except ValueError as error:
            return StageResult(False, f"Cluster test result {run.uri(RESULT_NAME)} is unreadable ({error})")
        return judge(document, run.uri(RESULT_NAME))
    if marker_key not in present:
        _claim_and_submit(s3, runner, run, marker_key)
        return None
    marker = read_json(s3, run.bucket, marker_key)
    problem = runner.submission_problem(run, marker)
    if problem:
        return StageResult(False, problem)
    if aws.now() >= run.deadline:
        return StageResult(False, (
            f"Cluster test gave no result before the deadline: nothing at {run.uri(RESULT_NAME)}; "
            f"{runner.where_to_look(run, present, marker)}"
        ))  # fmt: skip
    print(f"cluster all-reduce across {run.nodes} nodes running; waiting until {iso(run.deadline)}")
    return None


def _claim_and_submit(s3: Any, runner: ClusterTestRunner, run: ClusterRun, marker_key: str) -> None:
    """A marker only one writer can create, then the submission: a retried or overlapping poll, or a
    Lambda that dies in between, never starts a second all-reduce."""
    marker = {"SubmittedAt": iso(aws.now()), "Nodes": run.nodes}
    try:
        s3.put_object(
            Bucket=run.bucket, Key=marker_key, Body=json.dumps(marker).encode(),
            ContentType="application/json", IfNoneMatch="*",
        )  # fmt: skip
    except ClientError as error:
        if error.response["Error"]["Code"] in LOST_RACE:
            print("another poll has claimed the cluster test; following it")
            return
        raise
    marker.update(runner.submit(run))
    s3.put_object(Bucket=run.bucket, Key=marker_key, Body=json.dumps(marker).encode(),
                  ContentType="application/json")
    print(f"started the cluster all-reduce across {run.nodes} nodes ({run.prefix})")
