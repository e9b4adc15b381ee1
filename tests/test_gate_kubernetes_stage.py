"""The gate on EKS: stage 1 hands the passed-node count and a run id to the stack, whose Job runs
the all-reduce; the second gate resource waits for that Job's result. S3 and EC2 are stubbed."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from botocore.response import StreamingBody

from tests.gate_fakes import BUCKET, REQUEST_ID, RULES, T0, Aws, nodes_report, poll, properties, result
from trn_constructs.validation.handler import index

RUN = "cluster-test/0123456789ab/"
JOB = "trn-kit-allreduce-0123456789ab"
DEADLINE = T0 + timedelta(minutes=25)
STAGE = {
    "Stage": "cluster-test",
    "ReportsBucket": BUCKET,
    "RunPrefix": RUN,
    "ResultName": "result.json",
    "HostsDir": "hosts/",
    "LauncherKeyName": "launcher.pub",
    "Nodes": "4",
    "JobName": JOB,
    "Namespace": "trn-kit-burn-in",
    "TimeoutSeconds": "1500",
}


def wait(props=None):
    return index.is_complete({
        "RequestType": "Create", "RequestId": "another-request", "ResourceProperties": props or STAGE,
        "Data": {"Deadline": DEADLINE.isoformat()},
    })


def run_folder(aws: Aws, *names: str, result_body: bytes | None = None) -> None:
    keys = [*names, *(["result.json"] if result_body is not None else [])]
    aws.stubs["s3"].add_response(
        "list_objects_v2",
        {"IsTruncated": False, "Contents": [{"Key": RUN + name, "Size": 1} for name in keys]},
        {"Bucket": BUCKET, "Prefix": RUN},
    )
    if result_body is not None:
        aws.stubs["s3"].add_response(
            "get_object", {"Body": StreamingBody(io.BytesIO(result_body), len(result_body))},
            {"Bucket": BUCKET, "Key": RUN + "result.json"},
        )


def test_stage_one_hands_over_the_count_and_a_run_id_and_leaves_the_verdict_to_stage_two(monkeypatch):
    props = {k: v for k, v in properties().items() if k != "ClusterTestSkipped"}
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        data = poll({**props, "ClusterTestRunsNext": {"Fingerprint": "5e1f0c2a9b3d4e6f", "Seconds": "1500"}})["Data"]
    assert data["Summary"] == f"2/2 nodes passed the burn-in (policy 100%; {RULES}); median chip throughput 76.3% of peak"
    assert data["PassedNodes"] == "2"
    assert data["RunId"] == index.run_id(REQUEST_ID)
    assert re.fullmatch("[0-9a-f]{12}", data["RunId"])
    # The pods' deadline: the Job starts after this, so it cannot outlive its own 1500 s.
    assert data["ClusterTestNotAfter"] == "2026-11-22T08:25:00Z"  # T0 + 1500 s
    assert index.run_id("another-request") != data["RunId"]


def test_the_second_resource_keeps_its_own_deadline(monkeypatch):
    monkeypatch.setattr(index, "now", lambda: T0)
    assert index.on_event({"RequestType": "Create", "ResourceProperties": STAGE}) == {
        "PhysicalResourceId": "handover-cluster-test",
        "Data": {"Deadline": DEADLINE.isoformat()},
    }


def test_a_passing_result_is_the_summary(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        run_folder(aws, "launcher.pub", "hosts/1.json", result_body=result(True, 171.42))
        outcome = wait()
    assert outcome == {"IsComplete": True, "Data": {
        "Summary": "Cluster all-reduce across 2 nodes: 171.4 GiB/s bus bandwidth (floor 93.1 GiB/s)"}}


def test_a_failing_result_fails_the_deploy_with_its_reasons(monkeypatch):
    reason = "cannot reach pod 2 at 10.0.1.7 over SSH: Connection refused"
    with Aws(monkeypatch, T0) as aws:
        run_folder(aws, result_body=result(False, None, [reason]))
        with pytest.raises(index.GateFailed) as failed:
            wait()
    assert str(failed.value) == f"Cluster test failed: {reason}. Result: s3://{BUCKET}/{RUN}result.json"


def test_it_waits_for_the_job_before_the_deadline(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        run_folder(aws, "launcher.pub")
        assert wait() == {"IsComplete": False}


def test_no_result_at_the_deadline_says_how_far_the_pods_got(monkeypatch):
    with Aws(monkeypatch, DEADLINE) as aws:
        run_folder(aws, "launcher.pub", "hosts/3.json", "hosts/1.json")
        with pytest.raises(index.GateFailed) as failed:
            wait()
    assert str(failed.value) == (
        f"Cluster test gave no result before the deadline: Job {JOB} did not write "
        f"s3://{BUCKET}/{RUN}result.json; pod 0 published its SSH key; 2 of 3 other pods registered "
        f"(1, 3) (check kubectl -n trn-kit-burn-in get pods -l job-name={JOB} and the logs of its pods)"
    )


def test_a_job_whose_first_pod_never_started_says_so(monkeypatch):
    with Aws(monkeypatch, DEADLINE) as aws:
        run_folder(aws)
        with pytest.raises(index.GateFailed, match="pod 0 did not publish its SSH key; 0 of 3 other pods registered "
                                                   r"\(none\)"):
            wait()


def test_one_passed_node_has_nothing_to_wait_for(monkeypatch):
    with Aws(monkeypatch, T0):
        outcome = wait({**STAGE, "Nodes": "1"})
    assert outcome == {"IsComplete": True, "Data": {"Summary": "Cluster all-reduce not run: it needs 2+ nodes"}}
