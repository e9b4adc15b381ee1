"""The gate's second stage: one Slurm job runs the nccom-test all-reduce, the gate judges its result.

EC2, S3 and SSM are stubbed; stage 1 sees two passing nodes (reports from the real burn-in runner).
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
from datetime import timedelta

import pytest
from botocore.response import StreamingBody

from tests.gate_fakes import (
    BUCKET, REQUEST_ID, RULES, T0, Aws, body, nodes_report, poll, properties, report, result,
)
from trn_constructs.validation.handler import index

HEAD_NODE = "i-0head0000000000001"
RUN = f"cluster-test/{REQUEST_ID}/"
RESULT_URI = f"s3://{BUCKET}/{RUN}result.json"
COMMAND_ID = "0b1c2d3e-aaaa-bbbb-cccc-000000000001"
OVERRIDES = (
    '{"trn2":{"instanceType":"trn2.48xlarge","ultraserverType":null,"efaNetworkCards":16,'
    '"fp8PeakTflopsPerCore":157.2864}}'
)
COMMAND = [
    "/opt/trn-kit/bin/trn-burnin", "cluster-test", "--instance-type", "trn2.48xlarge",
    "--catalog-overrides", OVERRIDES, "--min-bus-bandwidth-fraction", "0.25", "--region", "us-east-2",
]
CLUSTER_TEST = {
    "HeadNodeInstanceId": HEAD_NODE,
    "Partition": "trainium",
    "Command": COMMAND,
    "Prefix": "cluster-test/",
    "ReserveSeconds": "600",
    "JobMinutes": "8",
}
# What the head node runs: nothing in the job's command expands there, $SLURM_JOB_ID in the job.
SUBMIT = (
    "/opt/slurm/bin/sbatch --parsable --job-name=trn-kit-cluster-test --partition=trainium "
    "--nodes=2 --exclusive --time=8 --chdir=/tmp --export=ALL,HOME=/root,PATH=/opt/slurm/bin:"
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
    "--output=/tmp/trn-kit-cluster-test-%j.log --wrap "
    + shlex.quote(
        " ".join(shlex.quote(part) for part in COMMAND)
        + f" --nodes 2 --result-uri {RESULT_URI} --slurm-job-id \"$SLURM_JOB_ID\""
    )
)


def with_cluster_test(**overrides):
    props = {k: v for k, v in properties(**overrides).items() if k != "ClusterTestSkipped"}
    return {**props, "ClusterTest": CLUSTER_TEST}


def listed(aws: Aws, **objects: bytes) -> None:
    """The run folder holds ``objects`` (name -> body); the gate lists it, then reads them."""
    aws.stubs["s3"].add_response(
        "list_objects_v2",
        {"IsTruncated": False,
         "Contents": [{"Key": RUN + name, "Size": len(body)} for name, body in objects.items()]},
        {"Bucket": BUCKET, "Prefix": RUN},
    )
    for name, content in objects.items():
        if name == "launch.json" and "result.json" in objects:
            continue  # a result ends the stage before the marker is read
        aws.stubs["s3"].add_response(
            "get_object", {"Body": StreamingBody(io.BytesIO(content), len(content))},
            {"Bucket": BUCKET, "Key": RUN + name},
        )


def marker_written(aws: Aws, marker: dict, only_if_new: bool = False) -> None:
    aws.stubs["s3"].add_response(
        "put_object", {},
        {"Bucket": BUCKET, "Key": RUN + "launch.json", "Body": json.dumps(marker).encode(),
         "ContentType": "application/json", **({"IfNoneMatch": "*"} if only_if_new else {})},
    )


def invocation(aws: Aws, status: str, stdout: str = "", stderr: str = "") -> None:
    aws.stubs["ssm"].add_response(
        "get_command_invocation",
        {"Status": status, "StandardOutputContent": stdout, "StandardErrorContent": stderr},
        {"CommandId": COMMAND_ID, "InstanceId": HEAD_NODE},
    )


def test_first_poll_after_the_nodes_pass_submits_one_job_marker_first(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws)
        marker = {"SubmittedAt": T0.isoformat(), "Nodes": 2}
        marker_written(aws, marker, only_if_new=True)
        aws.stubs["ssm"].add_response(
            "send_command", {"Command": {"CommandId": COMMAND_ID}},
            {"InstanceIds": [HEAD_NODE], "DocumentName": "AWS-RunShellScript",
             "Comment": "trn-kit handover gate: cluster all-reduce",
             "Parameters": {"commands": [SUBMIT]}},
        )
        marker_written(aws, {**marker, "CommandId": COMMAND_ID})
        assert poll(with_cluster_test()) == {"IsComplete": False}


@pytest.mark.parametrize(("status", "stdout"), [("InProgress", ""), ("Success", "42\n")])
def test_a_submitted_job_is_followed_never_submitted_again(monkeypatch, status, stdout):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"launch.json": body({"CommandId": COMMAND_ID})})
        invocation(aws, status, stdout=stdout)
        assert poll(with_cluster_test()) == {"IsComplete": False}


def test_an_invocation_ssm_does_not_know_yet_is_pending(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"launch.json": body({"CommandId": COMMAND_ID})})
        aws.stubs["ssm"].add_client_error(
            "get_command_invocation", service_error_code="InvocationDoesNotExist",
            expected_params={"CommandId": COMMAND_ID, "InstanceId": HEAD_NODE},
        )
        assert poll(with_cluster_test()) == {"IsComplete": False}


def test_an_overlapping_poll_that_loses_the_claim_sends_nothing(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws)
        aws.stubs["s3"].add_client_error(
            "put_object", service_error_code="PreconditionFailed", http_status_code=412,
        )
        assert poll(with_cluster_test()) == {"IsComplete": False}


def test_the_job_command_survives_the_head_nodes_shell_and_the_jobs():
    """Run the submission through sh as SSM does, with sbatch replaced by a printer of its
    --wrap argument, then that through sh as the job does: the node-side argv arrives intact."""
    test = index.ClusterTest.from_properties({"ClusterTest": CLUSTER_TEST})
    script = test.submit_script(2, RESULT_URI).replace(
        "/opt/slurm/bin/sbatch", 'f() { while [ "$1" != --wrap ]; do shift; done; printf %s "$2"; }; f'
    )
    wrapped = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    job = subprocess.run(
        ["sh", "-c", 'printf "%s\\n" ' + wrapped.removeprefix(COMMAND[0])],
        capture_output=True, text=True, check=True, env={"SLURM_JOB_ID": "42"},
    ).stdout.splitlines()
    assert job == COMMAND[1:] + ["--nodes", "2", "--result-uri", RESULT_URI, "--slurm-job-id", "42"]
    assert json.loads(job[job.index("--catalog-overrides") + 1])["trn2"]["efaNetworkCards"] == 16


def test_a_poll_that_died_before_sending_waits_and_fails_at_the_deadline(monkeypatch):
    # The marker without a command id: the command may or may not have gone out; never resend.
    with Aws(monkeypatch, T0 + timedelta(hours=1)) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"launch.json": body({"SubmittedAt": T0.isoformat(), "Nodes": 2})})
        with pytest.raises(index.GateFailed) as failed:
            poll(with_cluster_test())
    assert str(failed.value) == (
        "Cluster test gave no result before the deadline: the Slurm job on partition trainium "
        f"did not write {RESULT_URI} (check squeue and /tmp/trn-kit-cluster-test-<job id>.log on "
        "its first node)"
    )


def test_a_job_without_result_at_the_deadline_is_named(monkeypatch):
    with Aws(monkeypatch, T0 + timedelta(hours=1)) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"launch.json": body({"CommandId": COMMAND_ID})})
        invocation(aws, "Success", stdout="42\n")
        with pytest.raises(index.GateFailed, match="deadline: Slurm job 42 on partition trainium"):
            poll(with_cluster_test())


def test_a_failed_submission_fails_the_deploy_with_the_head_node_error(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"launch.json": body({"CommandId": COMMAND_ID})})
        invocation(aws, "Failed", stderr="sbatch: error: invalid partition specified: trainium")
        with pytest.raises(index.GateFailed) as failed:
            poll(with_cluster_test())
    assert str(failed.value) == (
        f"Cluster test could not be submitted on the head node {HEAD_NODE} (Failed): "
        "sbatch: error: invalid partition specified: trainium"
    )


def test_a_passing_result_without_a_measurement_is_unreadable(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"result.json": result(True, None)})
        with pytest.raises(index.GateFailed, match="is unreadable"):
            poll(with_cluster_test())


def test_a_passing_result_completes_the_handover_with_the_bandwidth(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"launch.json": b"{}", "result.json": result(True, 171.42)})
        outcome = poll(with_cluster_test())
    assert outcome["IsComplete"] is True
    assert outcome["Data"]["Summary"] == (
        f"2/2 nodes passed the burn-in (policy 100%; {RULES}); median chip throughput 76.3% of peak. "
        "Cluster all-reduce across 2 nodes: 171.4 GiB/s bus bandwidth (floor 93.1 GiB/s)"
    )


def test_a_failing_result_fails_the_deploy_with_its_reasons(monkeypatch):
    reason = ("all-reduce bus bandwidth 4.2 GiB/s across 2 nodes is below the 93.1 GiB/s floor "
              "(25% of 3200 Gbps EFA per instance)")
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"result.json": result(False, 4.2, [reason])})
        with pytest.raises(index.GateFailed) as failed:
            poll(with_cluster_test())
    assert str(failed.value) == f"Cluster test failed: {reason}. Result: {RESULT_URI}"


def test_an_unreadable_result_fails_the_deploy(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"result.json": b'{"schema_version": 7}'})
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
        nodes_report(aws, passed=("i-0aaa",), slow=("i-0bbb",))
        summary = poll(with_cluster_test(MinHealthyFraction="0.5"))["Data"]["Summary"]
    assert summary.endswith("Cluster all-reduce not run: it needs 2+ nodes")
