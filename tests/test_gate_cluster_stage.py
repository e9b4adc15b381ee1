"""The gate's second stage: one command on the head node runs the nccom-test all-reduce in a Slurm
allocation, the gate judges its result.

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
    BUCKET, REQUEST_ID, T0, Aws, body, nodes_report, poll, properties, report, result,
)
from trn_constructs.validation.handler import index

HEAD_NODE = "i-0head0000000000001"
RUN = f"cluster-test/{REQUEST_ID}/"
RESULT_URI = f"s3://{BUCKET}/{RUN}result.json"
COMMAND_ID = "0b1c2d3e-aaaa-bbbb-cccc-000000000001"
OVERRIDES = '{"trn2":{"instance_type":"trn2.48xlarge","ultraserver_type":null,"efa_network_cards":16}}'
BOOTSTRAP = "s3://cdk-assets/0a1b2c.py"
PACKAGE = "s3://cdk-assets/3d4e5f.zip"
COMMAND = [
    "python3", "/opt/trn-kit/trn_burnin_bootstrap.py", "--package", PACKAGE, "--region", "us-east-2",
    "--cluster-test", "--", "--instance-type", "trn2.48xlarge",
    "--catalog-overrides", OVERRIDES, "--min-bus-bandwidth-fraction", "0.25", "--region", "us-east-2",
]
CLUSTER_TEST = {
    "HeadNodeInstanceId": HEAD_NODE,
    "Partition": "trainium",
    "Region": "us-east-2",
    "Bootstrap": {"Source": BOOTSTRAP, "Path": "/opt/trn-kit/trn_burnin_bootstrap.py"},
    "Command": COMMAND,
    "Prefix": "cluster-test/",
    "ReserveSeconds": "600",
    "JobMinutes": "8",
}
# What the head node runs: the bootstrap of this deployment, then salloc, which runs the command on
# the head node inside the allocation (nccom-test's slurm mode, as the Neuron docs invoke it).
# Nothing in the command expands in SSM's shell, $SLURM_JOB_ID inside salloc.
SUBMIT = (
    "mkdir -p /opt/trn-kit && "
    f"aws s3 cp --only-show-errors --region us-east-2 {BOOTSTRAP} /opt/trn-kit/trn_burnin_bootstrap.py && "
    "env HOME=/root PATH=/opt/slurm/bin:/opt/aws/neuron/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
    "/usr/bin:/sbin:/bin /opt/slurm/bin/salloc --job-name=trn-kit-cluster-test --partition=trainium "
    "--nodes=2 --exclusive --time=8 --chdir=/tmp /bin/sh -c "
    + shlex.quote(
        'echo "$SLURM_JOB_ID"; exec '
        + " ".join(shlex.quote(part) for part in COMMAND)
        + f' --nodes 2 --result-uri {RESULT_URI} --slurm-job-id "$SLURM_JOB_ID"'
        + ' > "/var/log/trn-kit-cluster-test-$SLURM_JOB_ID.log" 2>&1'
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
             # SSM stops it (and so salloc gives the nodes back) when the stage runs out.
             "Parameters": {"commands": [SUBMIT], "executionTimeout": ["600"]}},
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


def test_the_command_survives_the_head_nodes_shell_and_runs_inside_the_allocation(tmp_path):
    """Run the command through sh as SSM does, with aws and salloc emulated as documented (salloc
    runs its command where it was called, with SLURM_JOB_ID set): the bootstrap is fetched first,
    the argv arrives intact, and salloc gets the allocation it needs."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    stubs = {
        "aws": f'echo "aws $*" >> {log}',
        "salloc": (f'echo "salloc $*" >> {log}; '
                   'while [ "${1#--}" != "$1" ]; do shift; done; SLURM_JOB_ID=42 exec "$@"'),
        "python3": f'printf "%s\\n" "$@" >> {log}.argv',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    test = index.ClusterTest.from_properties({"ClusterTest": CLUSTER_TEST})
    script = (
        test.submit_script(2, RESULT_URI)
        .replace("/opt/slurm/bin/salloc", str(bin_dir / "salloc"))
        .replace("PATH=/opt/slurm/bin:", f"PATH={bin_dir}:/opt/slurm/bin:")
        .replace("/var/log/", f"{tmp_path}/")
        .replace("mkdir -p /opt/trn-kit", "true")
    )
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.stdout == "42\n"  # the job id, for the gate's messages
    fetch, allocate = log.read_text().splitlines()
    assert fetch == f"aws s3 cp --only-show-errors --region us-east-2 {BOOTSTRAP} /opt/trn-kit/trn_burnin_bootstrap.py"
    assert allocate == (
        "salloc --job-name=trn-kit-cluster-test --partition=trainium --nodes=2 --exclusive --time=8 "
        "--chdir=/tmp /bin/sh -c " + allocate.split(" /bin/sh -c ", 1)[1]
    )
    argv = (tmp_path / "calls.argv").read_text().splitlines()
    assert argv == COMMAND[1:] + ["--nodes", "2", "--result-uri", RESULT_URI, "--slurm-job-id", "42"]
    assert json.loads(argv[argv.index("--catalog-overrides") + 1])["trn2"]["efa_network_cards"] == 16
    assert (tmp_path / "trn-kit-cluster-test-42.log").exists()  # the command's output, per job


def test_a_poll_that_died_before_sending_waits_and_fails_at_the_deadline(monkeypatch):
    # The marker without a command id: the command may or may not have gone out; never resend.
    with Aws(monkeypatch, T0 + timedelta(hours=1)) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"launch.json": body({"SubmittedAt": T0.isoformat(), "Nodes": 2})})
        with pytest.raises(index.GateFailed) as failed:
            poll(with_cluster_test())
    assert str(failed.value) == (
        "Cluster test gave no result before the deadline: the Slurm job on partition trainium "
        f"did not write {RESULT_URI} (check squeue and /var/log/trn-kit-cluster-test-<job id>.log "
        "on the head node)"
    )


def test_a_job_without_result_at_the_deadline_is_named(monkeypatch):
    with Aws(monkeypatch, T0 + timedelta(hours=1)) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"launch.json": body({"CommandId": COMMAND_ID})})
        invocation(aws, "Success", stdout="42\n")
        with pytest.raises(index.GateFailed, match="deadline: Slurm job 42 on partition trainium"):
            poll(with_cluster_test())


def test_a_command_that_ends_without_a_result_fails_the_deploy_with_the_head_node_error(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        listed(aws, **{"launch.json": body({"CommandId": COMMAND_ID})})
        invocation(aws, "Failed", stderr="salloc: error: invalid partition specified: trainium")
        with pytest.raises(index.GateFailed) as failed:
            poll(with_cluster_test())
    assert str(failed.value) == (
        f"Cluster test ended on the head node {HEAD_NODE} without a result (Failed): "
        "salloc: error: invalid partition specified: trainium (its output: "
        "/var/log/trn-kit-cluster-test-<job id>.log on the head node)"
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
        "2/2 nodes passed the burn-in (policy 100%); median chip throughput 76.3% of peak. "
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
