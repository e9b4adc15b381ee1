"""The handover's second stage on Slurm: one submission behind a marker, followed through SSM, and
judged from the result the job writes; each way it can go wrong names what to look at."""

from __future__ import annotations

import json
import shlex
import subprocess
from datetime import timedelta

import pytest

from tests.support.cloud import BUCKET, HEAD_NODE, Cloud
from tests.support.handover import settings, use
from trn_burnin.catalog import CATALOG
from trn_burnin.collective import AllReducePlan, BusBandwidthFloor, result_document
from trn_constructs.handover.handler import collective, slurm
from trn_constructs.handover.handler.slurm import SlurmNodes

OVERRIDES = '{"trn2":{"instanceType":"trn2.48xlarge","ultraserverType":null,"efaNetworkCards":16}}'
ARGUMENTS = (
    "--instance-type", "trn2.48xlarge", "--catalog-overrides", OVERRIDES,
    "--min-bus-bandwidth-fraction", "0.25", "--region", "us-east-2",
)  # fmt: skip
COMMAND = (
    "python3", "/opt/trn-kit/trn_burnin_bootstrap.py", "--package", "s3://cdk-assets/package.zip",
    "--region", "us-east-2", "--cluster-test", "--", *ARGUMENTS,
)  # fmt: skip
RUN_PREFIX = "cluster-test/run-1/"
RESULT_URI = f"s3://{BUCKET}/{RUN_PREFIX}result.json"


def config():
    from dataclasses import replace

    base = settings()
    return replace(base, cluster_test=replace(base.cluster_test, arguments=ARGUMENTS))


def run(cloud: Cloud, nodes: int = 2) -> collective.ClusterRun:
    return collective.ClusterRun(BUCKET, RUN_PREFIX, "run-1", nodes, cloud.now + timedelta(minutes=10))


def result(measured: float | None, failures=()) -> dict:
    spec = CATALOG["trn2"]
    return result_document(spec, AllReducePlan.for_cluster(spec, 2), BusBandwidthFloor.for_spec(spec),
                           "2026-12-10T12:00:00Z", list(failures), command=["nccom-test"], measured=measured)


def test_the_submission_allocates_the_nodes_and_runs_the_test_on_the_head_node_once(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    nodes = SlurmNodes(config())
    assert collective.advance(cloud.client("s3"), nodes, run(cloud)) is None
    assert collective.advance(cloud.client("s3"), nodes, run(cloud)) is None
    (command,) = cloud.calls("ssm", "SendCommand")
    assert command["InstanceIds"] == [HEAD_NODE]
    in_allocation = ('echo "$SLURM_JOB_ID"; exec ' + " ".join(shlex.quote(p) for p in COMMAND)
                     + f' --nodes 2 --result-uri {RESULT_URI} --slurm-job-id "$SLURM_JOB_ID"'
                     + ' > "/var/log/trn-kit-cluster-test-$SLURM_JOB_ID.log" 2>&1')
    assert command["Parameters"]["commands"] == [
        "mkdir -p /opt/trn-kit && aws s3 cp --only-show-errors --region us-east-2 s3://cdk-assets/bootstrap.py "
        "/opt/trn-kit/trn_burnin_bootstrap.py && env HOME=/root /opt/slurm/bin/salloc --job-name=trn-kit-cluster-test "
        "--partition=trainium --nodes=2 --exclusive --time=8 --chdir=/tmp /bin/sh -c " + shlex.quote(in_allocation)
    ]
    # SSM stops the command at the stage's deadline, and salloc gives the nodes back.
    assert command["Parameters"]["executionTimeout"] == ["600"]
    marker = json.loads(cloud.objects[RUN_PREFIX + "launch.json"][0])
    assert marker["CommandId"] == "00000000-0000-4000-8000-000000000001" and marker["HeadNode"] == HEAD_NODE


def test_a_poll_that_loses_the_claim_sends_nothing(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    cloud.put(RUN_PREFIX + "launch.json", {"SubmittedAt": "2026-12-10T11:59:00Z", "Nodes": 2})
    collective._claim_and_submit(cloud.client("s3"), SlurmNodes(config()), run(cloud), RUN_PREFIX + "launch.json")
    assert cloud.calls("ssm", "SendCommand") == []


def test_the_command_survives_the_head_nodes_shell_and_runs_inside_the_allocation(tmp_path):
    """Run the submission through sh as SSM does, with aws and salloc replaced by printers (salloc
    runs its command with SLURM_JOB_ID set, as it does): the cluster test's argv arrives intact."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "salloc").write_text('#!/bin/sh\nwhile [ "$1" != /bin/sh ]; do shift; done\nSLURM_JOB_ID=42 exec "$@"\n')
    (bin_dir / "python3").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    script = slurm.submit_script(config().slurm, ARGUMENTS, 2, RESULT_URI)
    script = (script.replace("/opt/slurm/bin/salloc", str(bin_dir / "salloc"))
              .replace("mkdir -p /opt/trn-kit", f"mkdir -p {tmp_path}")
              .replace("/var/log/trn-kit-cluster-test-$SLURM_JOB_ID.log", str(tmp_path / "out.log")))
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.stdout.strip() == "42"  # the job id, which the handover reports
    argv = (tmp_path / "out.log").read_text().splitlines()
    assert argv == [*COMMAND[1:], "--nodes", "2", "--result-uri", RESULT_URI, "--slurm-job-id", "42"]
    assert json.loads(argv[argv.index("--catalog-overrides") + 1])["trn2"]["efaNetworkCards"] == 16


def test_a_submission_the_handover_never_sent_is_named_at_the_deadline(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    cloud.put(RUN_PREFIX + "launch.json", {"SubmittedAt": "2026-12-10T11:59:00Z", "Nodes": 2})
    stage = run(cloud)
    cloud.now = stage.deadline
    verdict = collective.advance(cloud.client("s3"), SlurmNodes(config()), stage)
    assert verdict.passed is False
    assert verdict.summary == (
        f"Cluster test gave no result before the deadline: nothing at {RESULT_URI}; the submission behind "
        f"s3://{BUCKET}/{RUN_PREFIX}launch.json was never sent (the handover stopped in between); deploy again to "
        "run a new handover")
    assert cloud.calls("ssm", "SendCommand") == []


def test_a_failed_submission_carries_the_head_nodes_error(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    stage, nodes = run(cloud), SlurmNodes(config())
    collective.advance(cloud.client("s3"), nodes, stage)
    (record,) = cloud.commands.values()
    record.update(status="Failed", stderr="salloc: error: invalid partition specified: trainium", done_at=cloud.now)
    verdict = collective.advance(cloud.client("s3"), nodes, stage)
    assert verdict.summary == (
        f"Cluster test ended on the head node {HEAD_NODE} without a result (Failed): salloc: error: invalid "
        "partition specified: trainium (its output: /var/log/trn-kit-cluster-test-<job id>.log on the head node)")


def test_a_job_without_a_result_at_the_deadline_names_the_job(monkeypatch):
    cloud = use(monkeypatch, Cloud(cluster_job=timedelta(hours=2)))
    stage, nodes = run(cloud), SlurmNodes(config())
    collective.advance(cloud.client("s3"), nodes, stage)
    cloud.advance(600)
    verdict = collective.advance(cloud.client("s3"), nodes, stage)
    assert verdict.passed is False
    assert "Slurm job 101 on partition trainium did not finish (check squeue and " in verdict.summary
    assert verdict.summary.endswith("/var/log/trn-kit-cluster-test-<job id>.log on the head node)")


@pytest.mark.parametrize(("measured", "failures", "expected"), [
    (171.42, (), "Cluster all-reduce across 2 nodes: 171.4 GiB/s bus bandwidth (floor 93.1 GiB/s)"),
    (4.2, ("all-reduce bus bandwidth 4.2 GiB/s across 2 nodes is below the 93.1 GiB/s floor",),
     f"Cluster test failed: all-reduce bus bandwidth 4.2 GiB/s across 2 nodes is below the 93.1 GiB/s floor. "
     f"Result: {RESULT_URI}"),
])
def test_a_result_is_judged_as_it_says(monkeypatch, measured, failures, expected):
    cloud = use(monkeypatch, Cloud())
    cloud.put(RUN_PREFIX + "result.json", result(measured, failures))
    verdict = collective.advance(cloud.client("s3"), SlurmNodes(config()), run(cloud))
    assert (verdict.passed, verdict.summary) == (not failures, expected)


@pytest.mark.parametrize("document", [{"schema_version": 7}, [], None, "passed"])
def test_an_unreadable_result_fails_the_stage(monkeypatch, document):
    cloud = use(monkeypatch, Cloud())
    cloud.put(RUN_PREFIX + "result.json", document)
    verdict = collective.advance(cloud.client("s3"), SlurmNodes(config()), run(cloud))
    assert verdict.passed is False
    assert verdict.summary.startswith(f"Cluster test result {RESULT_URI} is unreadable (")


def test_a_passing_verdict_without_a_measurement_is_unreadable(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    cloud.put(RUN_PREFIX + "result.json", result(None))
    verdict = collective.advance(cloud.client("s3"), SlurmNodes(config()), run(cloud))
    assert verdict.passed is False
