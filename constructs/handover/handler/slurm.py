"""How the handover acts on a ParallelCluster Slurm cluster.

Everything inside Slurm goes through one SSM Run Command on the head node, which the handover finds
by ParallelCluster's own tags (a replaced head node is found again). A failed node's replacement is
EC2's TerminateInstances: ParallelCluster's clustermgtd notices the missing instance within a
minute and launches a new one for the same static node, which then burns in like any new node.

At the block's start ParallelCluster still holds the block's static nodes in its Slurm reservation
pcluster-<reservation id>, until its clustermgtd's Capacity Block manager, which reads the block's
state from EC2 only about every 11 minutes, sees it active. The handover restarts clustermgtd then:
a new one reads the block's state on its first loop, so the nodes launch within a minute or two.

The cluster test: the command allocates the passed nodes (salloc) and, from the head node, runs
nccom-test's slurm mode in that allocation, as the Neuron docs have it; the allocation ends with
the command, and SSM stops the command at the stage's deadline, which gives the nodes back.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath
from typing import Any

from botocore.exceptions import ClientError

from . import aws
from .collective import MARKER_NAME, ClusterRun
from .settings import Settings, SlurmSettings

SLURM_BIN = "/opt/slurm/bin"
HEAD_NODE_TAG = "parallelcluster:node-type"
CLUSTER_NAME_TAG = "parallelcluster:cluster-name"
# On the head node, one per Slurm job.
CLUSTER_TEST_LOG = "/var/log/trn-kit-cluster-test-$SLURM_JOB_ID.log"
# Where ParallelCluster's cookbook installs supervisord's client; the pyenv Python version varies.
SUPERVISORCTL_GLOB = "/opt/parallelcluster/pyenv/versions/*/envs/cookbook_virtualenv/bin/supervisorctl"
CAPACITY_BLOCK_RESERVATION_PREFIX = "pcluster-"  # slurm_plugin/capacity_block_manager.py
FAILED_COMMAND = ("Failed", "TimedOut", "Cancelled", "Undeliverable", "Terminated", "InvalidPlatform", "AccessDenied")


def head_node_instance_id(cluster_name: str) -> str:
    pages = aws.client("ec2").get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{CLUSTER_NAME_TAG}", "Values": [cluster_name]},
        {"Name": f"tag:{HEAD_NODE_TAG}", "Values": ["HeadNode"]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ])  # fmt: skip
    found = [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]
    if not found:
        raise RuntimeError(f"no running head node of ParallelCluster cluster {cluster_name}")
    return found[0]


def send_script(head_node: str, script: str, comment: str, timeout_seconds: int | None = None) -> str:
    parameters = {"commands": [script]}
    if timeout_seconds:
        parameters["executionTimeout"] = [str(timeout_seconds)]
    response = aws.client("ssm").send_command(
        InstanceIds=[head_node], DocumentName="AWS-RunShellScript", Comment=comment[:100], Parameters=parameters,
    )  # fmt: skip
    return response["Command"]["CommandId"]


def command_state(head_node: str, command_id: str) -> tuple[str, str]:
    """(status, standard output while running or on success (salloc's job id first), else the end
    of standard error)."""
    try:
        invocation = aws.client("ssm").get_command_invocation(CommandId=command_id, InstanceId=head_node)
    except ClientError as error:
        if error.response["Error"]["Code"] == "InvocationDoesNotExist":
            return "Pending", ""
        raise
    status = invocation["Status"]
    if status in ("Success", "InProgress"):
        return status, invocation.get("StandardOutputContent", "").strip()
    return status, invocation.get("StandardErrorContent", "").strip()[-500:]


def cluster_test_command(slurm: SlurmSettings, arguments: tuple[str, ...]) -> list[str]:
    """The bootstrap, fetched fresh, fetches this deployment's package and becomes its cluster test."""
    return ["python3", slurm.bootstrap_path, "--package", slurm.package, "--region", slurm.region,
            "--cluster-test", "--", *arguments]


def submit_script(slurm: SlurmSettings, arguments: tuple[str, ...], nodes: int, result_uri: str) -> str:
    """On the head node: fetch the bootstrap, then hold ``nodes`` nodes with salloc and run the
    cluster test in the allocation, on the head node itself. It prints the job id; the test's output
    goes to CLUSTER_TEST_LOG. $SLURM_JOB_ID is quoted so it expands inside salloc."""
    job = [*cluster_test_command(slurm, arguments), "--nodes", str(nodes), "--result-uri", result_uri]
    in_allocation = (
        'echo "$SLURM_JOB_ID"; exec ' + " ".join(shlex.quote(part) for part in job)
        + f' --slurm-job-id "$SLURM_JOB_ID" > "{CLUSTER_TEST_LOG}" 2>&1'
    )
    fetch = ["aws", "s3", "cp", "--only-show-errors", "--region", slurm.region, slurm.bootstrap_source,
             slurm.bootstrap_path]
    allocate = [
        "env", *slurm.job_environment, f"{SLURM_BIN}/salloc", "--job-name=trn-kit-cluster-test",
        f"--partition={slurm.partition}", f"--nodes={nodes}", "--exclusive",
        # The SSM command's own directory does not exist on the compute nodes.
        f"--time={slurm.job_minutes}", "--chdir=/tmp", "/bin/sh", "-c", in_allocation,
    ]  # fmt: skip
    return " && ".join([
        shlex.join(["mkdir", "-p", str(PurePosixPath(slurm.bootstrap_path).parent)]),
        shlex.join(fetch),
        shlex.join(allocate),
    ])


def capacity_block_refresh_script(reservation_id: str) -> str:
    """Restart clustermgtd while ParallelCluster still holds the block's nodes in its reservation
    (a new clustermgtd reads the block's state at once); do nothing once the reservation is gone."""
    reservation = f"{CAPACITY_BLOCK_RESERVATION_PREFIX}{reservation_id}"
    return (
        f"if ! {SLURM_BIN}/scontrol show reservation={reservation} >/dev/null 2>&1; then "
        f"echo 'no reservation {reservation}: clustermgtd already launches the nodes'; exit 0; fi; "
        f"ctl=$(ls {SUPERVISORCTL_GLOB} 2>/dev/null | head -n 1); "
        '[ -n "$ctl" ] || { echo "no supervisorctl at ' + SUPERVISORCTL_GLOB + '" >&2; exit 1; }; '
        '"$ctl" restart clustermgtd'
    )


def drain_script(partition: str, reason: str) -> str:
    """Drain every node of the partition: running jobs finish, nothing new starts."""
    nodes = f'"$({SLURM_BIN}/sinfo -h -p {partition} -o %N)"'
    return (
        f"set -e; nodes={nodes}; "
        f'[ -n "$nodes" ] && {SLURM_BIN}/scontrol update NodeName="$nodes" State=DRAIN '
        f"Reason={shlex.quote(reason)}; {SLURM_BIN}/sinfo -h -p {partition} -o '%N %T'"
    )


class SlurmNodes:
    def __init__(self, settings: Settings):
        assert settings.slurm is not None
        self._settings, self._slurm = settings, settings.slurm

    def ensure_capacity(self) -> None:
        """ParallelCluster launches every static node of the block itself; at the block's start,
        make it notice now rather than at its next Capacity Block check. Only time depends on this:
        a failure is logged and ParallelCluster's own check launches the nodes minutes later."""
        try:
            head_node = head_node_instance_id(self._slurm.cluster_name)
            command = send_script(head_node, capacity_block_refresh_script(self._settings.reservation_id),
                                  "trn-kit: launch the Capacity Block's nodes now")
        except (ClientError, RuntimeError) as error:
            print(f"could not restart clustermgtd ({error}); ParallelCluster launches the nodes at its "
                  "next Capacity Block check, within about 11 minutes")
            return
        print(f"restarting clustermgtd so it launches the Capacity Block's nodes now (SSM command {command} "
              f"on {head_node})")

    def replace(self, instance_id: str) -> None:
        aws.client("ec2").terminate_instances(InstanceIds=[instance_id])

    def stop_new_work(self, reason: str) -> str:
        head_node = head_node_instance_id(self._slurm.cluster_name)
        command = send_script(head_node, drain_script(self._slurm.partition, reason), "trn-kit: drain before the block ends")
        return f"drained the Slurm partition {self._slurm.partition} (SSM command {command} on {head_node})"

    # -- the cluster test (collective.ClusterTestRunner) ------------------------------------
    def submit(self, run: ClusterRun) -> dict[str, str]:
        assert self._settings.cluster_test is not None
        head_node = head_node_instance_id(self._slurm.cluster_name)
        script = submit_script(self._slurm, self._settings.cluster_test.arguments, run.nodes, run.uri("result.json"))
        # Stopped with the stage: salloc then gives the nodes back, also when they never came.
        seconds = max(60, int((run.deadline - aws.now()).total_seconds()))
        command = send_script(head_node, script, "trn-kit handover: cluster all-reduce", timeout_seconds=seconds)
        return {"CommandId": command, "HeadNode": head_node}

    def submission_problem(self, run: ClusterRun, marker: dict[str, Any]) -> str | None:
        if "CommandId" not in marker:
            return None  # judged at the deadline: the submission may never have been sent
        state, detail = command_state(marker["HeadNode"], marker["CommandId"])
        if state in FAILED_COMMAND:
            log = CLUSTER_TEST_LOG.replace("$SLURM_JOB_ID", "<job id>")
            return (f"Cluster test ended on the head node {marker['HeadNode']} without a result "
                    f"({state}): {detail} (its output: {log} on the head node)")
        return None

    def where_to_look(self, run: ClusterRun, present: set[str], marker: dict[str, Any]) -> str:
        if "CommandId" not in marker:
            return (f"the submission behind {run.uri(MARKER_NAME)} was never sent (the handover "
                    "stopped in between); deploy again to run a new handover")
        state, detail = command_state(marker["HeadNode"], marker["CommandId"])
        job = f"Slurm job {detail.splitlines()[0]}" if detail else "the Slurm job"
        log = CLUSTER_TEST_LOG.replace("$SLURM_JOB_ID", "<job id>")
        return (f"{job} on partition {self._slurm.partition} did not finish (check squeue and {log} "
                "on the head node)")
