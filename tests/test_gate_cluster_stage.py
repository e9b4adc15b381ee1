"""The gate's second stage: one Slurm job runs the nccom-test all-reduce, the gate judges its result.

EC2, S3 and SSM are stubbed; stage 1 sees two passing nodes (reports from the real burn-in runner).
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from botocore.response import StreamingBody

from tests.test_gate_handler import BUCKET, REQUEST_ID, T0, Aws, body, poll, properties, report
from trn_constructs.validation.handler import index

HEAD_NODE = "i-0head0000000000001"
RUN = f"cluster-test/{REQUEST_ID}/"
RESULT_URI = f"s3://{BUCKET}/{RUN}result.json"
COMMAND_ID = "0b1c2d3e-aaaa-bbbb-cccc-000000000001"
CLUSTER_TEST = {
    "HeadNodeInstanceId": HEAD_NODE,
    "Partition": "trainium",
    "Command": [
        "/opt/trn-kit/bin/trn-burnin", "cluster-test", "--instance-type", "trn2.48xlarge",
        "--min-bus-bandwidth-fraction", "0.25", "--region", "us-east-2",
    ],
    "Prefix": "cluster-test/",
    "ReserveSeconds": "600",
    "JobMinutes": "8",
}
# What the head node runs: nothing in the job's command expands there, $SLURM_JOB_ID in the job.
SUBMIT = (
    "/opt/slurm/bin/sbatch --parsable --job-name=trn-kit-cluster-test --partition=trainium "
    "--nodes=2 --exclusive --time=8 --chdir=/tmp --output=/tmp/trn-kit-cluster-test-%j.log --wrap "
    "'/opt/trn-kit/bin/trn-burnin cluster-test --instance-type trn2.48xlarge "
    "--min-bus-bandwidth-fraction 0.25 --region us-east-2 --nodes 2 --result-uri "
    f"{RESULT_URI} --slurm-job-id \"$SLURM_JOB_ID\"'"
)


def with_cluster_test(**overrides):
    props = {k: v for k, v in properties(**overrides).items() if k != "ClusterTestSkipped"}
    return {**props, "ClusterTest": CLUSTER_TEST}


def nodes_pass(aws: Aws, *instance_ids: str) -> None:
    aws.running(*instance_ids)
    aws.reports(*((f"{i}-20261122T081000Z.json", body(report(i)), T0) for i in instance_ids))


def s3_object(aws: Aws, key: str, content: bytes | None) -> None:
    if content is None:
        aws.stubs["s3"].add_client_error(
            "get_object", service_error_code="NoSuchKey", http_status_code=404,
            expected_params={"Bucket": BUCKET, "Key": key},
        )
    else:
        aws.stubs["s3"].add_response(
            "get_object", {"Body": StreamingBody(io.BytesIO(content), len(content))},
            {"Bucket": BUCKET, "Key": key},
        )


def marker_written(aws: Aws, marker: dict) -> None:
    aws.stubs["s3"].add_response(
        "put_object", {},
        {"Bucket": BUCKET, "Key": RUN + "launch.json", "Body": json.dumps(marker).encode(),
         "ContentType": "application/json"},
    )


def invocation(aws: Aws, status: str, stdout: str = "", stderr: str = "") -> None:
    aws.stubs["ssm"].add_response(
        "get_command_invocation",
        {"Status": status, "StandardOutputContent": stdout, "StandardErrorContent": stderr},
        {"CommandId": COMMAND_ID, "InstanceId": HEAD_NODE},
    )


def result(passed: bool, measured: float, failures=()) -> bytes:
    """The fields of trn_burnin's cluster-test result document that the gate reads."""
    return body({
        "schema_version": 1,
        "nodes": 2,
        "bus_bandwidth_gibps": measured,
        "threshold": {"min_bus_bandwidth_gibps": 93.13, "fraction": 0.25,
                      "efa_gbps_per_instance": 3200},
        "verdict": {"passed": passed, "failures": [{"message": m} for m in failures]},
    })


def test_first_poll_after_the_nodes_pass_submits_one_job_marker_first(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_pass(aws, "i-0aaa", "i-0bbb")
        s3_object(aws, RUN + "result.json", None)
        s3_object(aws, RUN + "launch.json", None)
        marker = {"SubmittedAt": T0.isoformat(), "Nodes": 2}
        marker_written(aws, marker)
        aws.stubs["ssm"].add_response(
            "send_command", {"Command": {"CommandId": COMMAND_ID}},
            {"InstanceIds": [HEAD_NODE], "DocumentName": "AWS-RunShellScript",
             "Comment": "trn-kit handover gate: cluster all-reduce",
             "Parameters": {"commands": [SUBMIT]}},
        )
        marker_written(aws, {**marker, "CommandId": COMMAND_ID})
        assert poll(with_cluster_test()) == {"IsComplete": False}


def test_a_submitted_job_is_followed_never_submitted_again(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_pass(aws, "i-0aaa", "i-0bbb")
        s3_object(aws, RUN + "result.json", None)
        s3_object(aws, RUN + "launch.json", body({"CommandId": COMMAND_ID}))
        invocation(aws, "Success", stdout="42\n")
        assert poll(with_cluster_test()) == {"IsComplete": False}


def test_a_poll_that_died_before_sending_waits_and_fails_at_the_deadline(monkeypatch):
    # The marker without a command id: the command may or may not have gone out; never resend.
    with Aws(monkeypatch, T0 + timedelta(hours=1)) as aws:
        nodes_pass(aws, "i-0aaa", "i-0bbb")
        s3_object(aws, RUN + "result.json", None)
        s3_object(aws, RUN + "launch.json", body({"SubmittedAt": T0.isoformat(), "Nodes": 2}))
        with pytest.raises(index.GateFailed) as failed:
            poll(with_cluster_test())
    assert str(failed.value) == (
        "Cluster test gave no result before the deadline: the Slurm job on partition trainium "
        f"did not write {RESULT_URI} (check squeue and /tmp/trn-kit-cluster-test-<job id>.log on "
        "its first node)"
    )


def test_a_job_without_result_at_the_deadline_is_named(monkeypatch):
    with Aws(monkeypatch, T0 + timedelta(hours=1)) as aws:
        nodes_pass(aws, "i-0aaa", "i-0bbb")
        s3_object(aws, RUN + "result.json", None)
        s3_object(aws, RUN + "launch.json", body({"CommandId": COMMAND_ID}))
        invocation(aws, "Success", stdout="42\n")
        with pytest.raises(index.GateFailed, match="deadline: Slurm job 42 on partition trainium"):
            poll(with_cluster_test())


def test_a_failed_submission_fails_the_deploy_with_the_head_node_error(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_pass(aws, "i-0aaa", "i-0bbb")
        s3_object(aws, RUN + "result.json", None)
        s3_object(aws, RUN + "launch.json", body({"CommandId": COMMAND_ID}))
        invocation(aws, "Failed", stderr="sbatch: error: invalid partition specified: trainium")
        with pytest.raises(index.GateFailed) as failed:
            poll(with_cluster_test())
    assert str(failed.value) == (
        f"Cluster test could not be submitted on the head node {HEAD_NODE} (Failed): "
        "sbatch: error: invalid partition specified: trainium"
    )


def test_a_passing_result_completes_the_handover_with_the_bandwidth(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_pass(aws, "i-0aaa", "i-0bbb")
        s3_object(aws, RUN + "result.json", result(True, 171.42))
        outcome = poll(with_cluster_test())
    assert outcome["IsComplete"] is True
    assert outcome["Data"]["Summary"] == (
        "2/2 nodes passed the burn-in (policy 100%); median chip throughput 76.3% of peak. "
        "Cluster all-reduce across 2 nodes: 171.4 GiB/s bus bandwidth (floor 93.1 GiB/s)"
    )


def test_a_failing_result_fails_the_deploy_with_its_reasons(monkeypatch):
    reason = ("all-reduce bus bandwidth 4.2 GiB/s across 2 nodes is below the 93.1 GiB/s floor "
              "(25% of 3200 Gbps EFA per instance)")
    with Aws(monkeypatch, T0) as aws:
        nodes_pass(aws, "i-0aaa", "i-0bbb")
        s3_object(aws, RUN + "result.json", result(False, 4.2, [reason]))
        with pytest.raises(index.GateFailed) as failed:
            poll(with_cluster_test())
    assert str(failed.value) == f"Cluster test failed: {reason}. Result: {RESULT_URI}"


def test_an_unreadable_result_fails_the_deploy(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_pass(aws, "i-0aaa", "i-0bbb")
        s3_object(aws, RUN + "result.json", b'{"schema_version": 7}')
        with pytest.raises(index.GateFailed, match=f"result {RESULT_URI} is unreadable"):
            poll(with_cluster_test())


def test_stage_one_ends_early_enough_to_leave_the_reserve(monkeypatch):
    # 55 minutes in: the nodes' deadline (60 - 10 minutes reserve) has passed.
    with Aws(monkeypatch, T0 + timedelta(minutes=55)) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0))
        with pytest.raises(index.GateFailed, match="i-0bbb: no report before the deadline"):
            poll(with_cluster_test())


def test_one_passed_node_has_no_peer_to_test(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0),
            ("i-0bbb-20261122T081000Z.json", body(report("i-0bbb", slow_core=5)), T0),
        )
        summary = poll(with_cluster_test(MinHealthyFraction="0.5"))["Data"]["Summary"]
    assert summary.endswith("Cluster all-reduce not run: it needs 2+ nodes")
