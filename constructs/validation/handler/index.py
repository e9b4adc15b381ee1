"""Handover gate: the deploy completes only when every Trainium node has proven itself.

CDK Provider framework handlers:
- ``on_event`` records the deadline (now + TimeoutSeconds) and returns at once;
- ``is_complete`` runs every poll, in two stages.

Stage 1, the nodes: it asks EC2 which instances run in the Capacity Block and reads the newest
burn-in report of each from S3. Once every running instance has a report, the stage passes when
``passed / ExpectedNodes >= MinHealthyFraction`` and fails otherwise, naming each failed node and
its reasons. At the stage's deadline, nodes without a report count as failed ("no report") and the
same rule applies, so a policy below 1.0 can still hand over a cluster with a straggler. Failed
reports of instances gone since the gate started (ParallelCluster replaces a node that fails its
bootstrap) are named in the summary; their replacements are what counts.

Stage 2, the cluster all-reduce (``nccom-test`` across the passed nodes), comes in two forms.

- Slurm (``ClusterTest`` given, 2+ nodes passed): the gate submits one Slurm job on the head node,
  through SSM Run Command, and waits for the verdict it writes to S3. The stage's objects live under
  ``<ClusterTest.Prefix><RequestId>/``: ``launch.json`` is created (a conditional write only one
  poll can win) *before* the job is submitted, so neither a retried nor an overlapping poll submits
  a second job, and ``result.json`` is the node's verdict. Stage 1 ends ``ReserveSeconds`` before
  the deadline so stage 2 always has that long.
- Kubernetes (``ClusterTestRunsNext``: the ``Fingerprint`` of that Job and its ``Seconds``):
  stage 1 completes with ``PassedNodes``, a ``RunId`` and ``ClusterTestNotAfter`` (now + Seconds,
  which the pods plan their waits by); the stack then applies a Job of that many pods, and a second
  resource of this type (``Stage: cluster-test``) waits for the ``result.json`` the Job's first pod
  writes under ``RunPrefix``. Its deadline is its own ``TimeoutSeconds``.

The gate never stops, deletes or buys anything; its only action is that one Slurm job.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
from botocore.exceptions import ClientError
from trn_burnin.report_check import UnreadableReport, read_node_report

CLUSTER_RESULT_SCHEMA_VERSION = 1
JOB_ENVIRONMENT = (
    "HOME=/root,PATH=/opt/slurm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)
MAX_REASONS_PER_NODE = 3
# trn_burnin.publish names each report <instance id>-<UTC timestamp>.json under the prefix.
REPORT_KEY = re.compile(r"(?P<instance>i-[0-9a-f]+)-[^/]+\.json")
CLUSTER_TEST_STAGE = "cluster-test"
NOT_ENOUGH_NODES = "Cluster all-reduce not run: it needs 2+ nodes"
UTC_SECONDS = "%Y-%m-%dT%H:%M:%SZ"  # what the pods' --not-after reads
RUN_ID_LENGTH = 12  # hex digits: part of a Kubernetes Job name, unique per deployment request


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
class ClusterTest:
    """How stage 2 reaches the cluster: a Slurm job submitted on the head node."""

    head_node_instance_id: str
    partition: str
    command: tuple[str, ...]  # the node-side program and its fixed arguments
    prefix: str  # where launch markers and results go, in the reports bucket
    reserve_seconds: int
    job_minutes: int

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> "ClusterTest | None":
        test = props.get("ClusterTest")
        if not test:
            return None
        return cls(
            head_node_instance_id=test["HeadNodeInstanceId"],
            partition=test["Partition"],
            command=tuple(test["Command"]),
            prefix=test["Prefix"],
            reserve_seconds=int(test["ReserveSeconds"]),
            job_minutes=int(test["JobMinutes"]),
        )

    def submit_script(self, nodes: int, result_uri: str) -> str:
        """sbatch on the head node; $SLURM_JOB_ID is quoted so it expands in the job, not here."""
        job = [*self.command, "--nodes", str(nodes), "--result-uri", result_uri]
        wrapped = " ".join(shlex.quote(part) for part in job) + ' --slurm-job-id "$SLURM_JOB_ID"'
        return " ".join([
            "/opt/slurm/bin/sbatch", "--parsable", "--job-name=trn-kit-cluster-test",
            f"--partition={self.partition}", f"--nodes={nodes}", "--exclusive",
            # The SSM command's own directory does not exist on the compute nodes, and its
            # environment has no HOME and no Slurm on PATH (nccom-test's slurm mode calls srun).
            f"--time={self.job_minutes}", "--chdir=/tmp", f"--export=ALL,{JOB_ENVIRONMENT}",
            "--output=/tmp/trn-kit-cluster-test-%j.log",
            "--wrap", shlex.quote(wrapped),
        ])


@dataclass(frozen=True)
class KubernetesClusterTest:
    """Stage 2 as its own resource: the Job the stack applied writes its verdict under a run prefix."""

    bucket: str
    run_prefix: str
    result_name: str
    hosts_dir: str
    launcher_key_name: str
    nodes: int
    job_name: str
    namespace: str

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> "KubernetesClusterTest":
        return cls(
            bucket=props["ReportsBucket"],
            run_prefix=props["RunPrefix"],
            result_name=props["ResultName"],
            hosts_dir=props["HostsDir"],
            launcher_key_name=props["LauncherKeyName"],
            nodes=int(props["Nodes"]),
            job_name=props["JobName"],
            namespace=props["Namespace"],
        )

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.run_prefix}{name}"

    def progress(self, present: set[str]) -> str:
        """Which pods got as far as the rendezvous, for a message at the deadline."""
        hosts = self.run_prefix + self.hosts_dir
        registered = sorted(
            int(match[1])
            for key in present
            if (match := re.fullmatch(re.escape(hosts) + r"(\d+)\.json", key))
        )
        launcher = "published" if self.run_prefix + self.launcher_key_name in present else "did not publish"
        return (
            f"pod 0 {launcher} its SSH key; {len(registered)} of {self.nodes - 1} other pods "
            f"registered ({', '.join(map(str, registered)) or 'none'})"
        )


@dataclass(frozen=True)
class NodeOutcome:
    instance_id: str
    passed: bool
    reasons: tuple[str, ...]
    chip_fractions_of_peak: tuple[float, ...] = ()
    thresholds: str = ""  # the per-core rules its report was judged by

    def describe(self) -> str:
        return f"{self.instance_id}: " + "; ".join(self.reasons[:MAX_REASONS_PER_NODE])


def on_event(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    request, props = event["RequestType"], event["ResourceProperties"]
    if props.get("Stage") == CLUSTER_TEST_STAGE:
        physical_id, waiting = "handover-cluster-test", f"the cluster all-reduce in {props.get('RunPrefix')}"
    else:
        settings = GateSettings.from_properties(props)
        physical_id = f"handover-gate-{settings.reservation_id}"
        waiting = f"{settings.expected_nodes} burn-in reports in {settings.location}"
    physical_id = event.get("PhysicalResourceId") or physical_id
    if request == "Delete":
        return {"PhysicalResourceId": physical_id}
    deadline = now() + timedelta(seconds=int(props["TimeoutSeconds"]))
    print(f"{request}: waiting for {waiting}")
    return {"PhysicalResourceId": physical_id, "Data": {"Deadline": deadline.isoformat()}}


def is_complete(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return {"IsComplete": True}
    props = event["ResourceProperties"]
    if props.get("Stage") == CLUSTER_TEST_STAGE:
        return kubernetes_cluster_stage(
            KubernetesClusterTest.from_properties(props),
            datetime.fromisoformat(event["Data"]["Deadline"]),
        )
    settings = GateSettings.from_properties(props)
    cluster_test = ClusterTest.from_properties(props)
    deadline = datetime.fromisoformat(event["Data"]["Deadline"])
    nodes_deadline = deadline - timedelta(seconds=cluster_test.reserve_seconds if cluster_test else 0)
    instances = running_instances(settings.reservation_id)
    started = deadline - timedelta(seconds=settings.timeout_seconds)
    outcomes, replaced = newest_outcomes(settings, instances, started)
    missing = sorted(instances - set(outcomes))
    waiting_for_nodes = len(instances) < settings.expected_nodes
    if (missing or waiting_for_nodes) and now() < nodes_deadline:
        print(
            f"{len(outcomes)} of {settings.expected_nodes} reports in; "
            f"{len(instances)} instances running; waiting until {nodes_deadline.isoformat()}"
        )
        return {"IsComplete": False}
    for instance_id in missing:
        outcomes[instance_id] = NodeOutcome(instance_id, False, ("no report before the deadline",))
    summary, passed = decide(settings, list(outcomes.values()), len(instances), replaced)
    run = {"PassedNodes": str(passed), "RunId": run_id(event["RequestId"])}
    follows = props.get("ClusterTestRunsNext")
    if follows:
        # The Job starts after this and is stopped Seconds after its start: a deadline counted
        # from now is never later than its own.
        not_after = now() + timedelta(seconds=int(follows["Seconds"]))
        return complete(settings, summary, {**run, "ClusterTestNotAfter": not_after.strftime(UTC_SECONDS)})
    if cluster_test is None:
        reason = props.get("ClusterTestSkipped", "not configured")
        return complete(settings, f"{summary}. Cluster all-reduce not run: {reason}", run)
    if passed < 2:
        return complete(settings, f"{summary}. {NOT_ENOUGH_NODES}", run)
    verdict = cluster_stage(settings, cluster_test, event["RequestId"], passed, deadline)
    if verdict is None:
        return {"IsComplete": False}
    return complete(settings, f"{summary}. {verdict}", run)


def run_id(request_id: str) -> str:
    """Names this deployment request's cluster test (a Kubernetes Job, an S3 folder)."""
    return hashlib.sha256(request_id.encode()).hexdigest()[:RUN_ID_LENGTH]


def complete(settings: GateSettings, summary: str, run: dict[str, str]) -> dict[str, Any]:
    print(summary)
    return {
        "IsComplete": True,
        "Data": {"Summary": summary, "ReportLocation": settings.location, **run},
    }


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


def newest_outcomes(
    settings: GateSettings, instances: set[str], since: datetime
) -> tuple[dict[str, NodeOutcome], tuple[NodeOutcome, ...]]:
    """The newest report of each of ``instances`` (a re-run writes a newer one), and the failures
    of instances gone since ``since`` (ParallelCluster replaces a node that fails its bootstrap:
    the replacement is judged, the failure is still worth naming). Older reports are stale."""
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
            if instance_id not in instances and item["LastModified"] < since:
                continue
            if instance_id not in newest or item["LastModified"] > newest[instance_id]["LastModified"]:
                newest[instance_id] = item
        if not page.get("IsTruncated"):
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    outcomes = {
        instance_id: read_outcome(s3, settings.bucket, item["Key"], instance_id)
        for instance_id, item in newest.items()
    }
    replaced = tuple(o for i, o in sorted(outcomes.items()) if i not in instances and not o.passed)
    return {i: o for i, o in outcomes.items() if i in instances}, replaced


def read_outcome(s3: Any, bucket: str, key: str, instance_id: str) -> NodeOutcome:
    """A node's report, read strictly by trn_burnin's own checker (shipped with this function)."""
    try:
        reading = read_node_report(read_object(s3, bucket, key))
    except UnreadableReport as error:
        return NodeOutcome(instance_id, False, (f"unreadable report s3://{bucket}/{key} ({error})",))
    return NodeOutcome(instance_id, reading.passed, reading.reasons or ("passed",),
                       reading.chip_fractions_of_peak, reading.thresholds)


def decide(
    settings: GateSettings,
    outcomes: list[NodeOutcome],
    running: int,
    replaced: tuple[NodeOutcome, ...] = (),
) -> tuple[str, int]:
    """Stage 1's summary and the number of passed nodes; raises GateFailed below the policy."""
    passed = [o for o in outcomes if o.passed]
    failed = sorted((o for o in outcomes if not o.passed), key=lambda o: o.instance_id)
    healthy_fraction = len(passed) / settings.expected_nodes
    fractions = [f for o in passed for f in o.chip_fractions_of_peak]
    median = f"{100 * statistics.median(fractions):.1f}%" if fractions else "n/a"
    rules = sorted({o.thresholds for o in outcomes if o.thresholds})
    summary = (
        f"{len(passed)}/{settings.expected_nodes} nodes passed the burn-in "
        f"(policy {settings.min_healthy_fraction:.0%}; {' | '.join(rules) or 'no readable report'}); "
        f"median chip throughput {median} of peak"
    )
    if running < settings.expected_nodes:
        summary += f"; only {running} of {settings.expected_nodes} instances were running"
    if replaced:
        summary += "; replaced after failing the burn-in: " + " | ".join(
            o.describe() for o in replaced
        )
    if healthy_fraction < settings.min_healthy_fraction or not passed:
        details = " | ".join(o.describe() for o in failed)
        raise GateFailed(f"Burn-in gate failed: {summary}. Failed nodes: {details}. "
                         f"Reports: {settings.location}")
    if failed:
        summary += ". Accepted failures: " + " | ".join(o.describe() for o in failed)
    return summary, len(passed)


def cluster_stage(
    settings: GateSettings, test: ClusterTest, request_id: str, nodes: int, deadline: datetime
) -> str | None:
    """Stage 2's one-line verdict, None while it runs; raises GateFailed when it fails."""
    s3 = client("s3")
    run_prefix = f"{test.prefix}{request_id}/"
    result_key, launch_key = run_prefix + "result.json", run_prefix + "launch.json"
    result_uri = f"s3://{settings.bucket}/{result_key}"
    # Listed rather than fetched blind: a missing key is a 403, not a 404, for a role that may
    # list only under a prefix.
    present = listed_keys(s3, settings.bucket, run_prefix)
    if result_key in present:
        return judge_cluster_result(read_object(s3, settings.bucket, result_key), result_uri)
    if launch_key not in present:
        submit_cluster_test(s3, settings.bucket, launch_key, test, nodes, result_uri)
        return None
    launch = json.loads(read_object(s3, settings.bucket, launch_key))
    state, detail = command_state(test.head_node_instance_id, launch.get("CommandId"))
    if state in ("Failed", "TimedOut", "Cancelled"):
        raise GateFailed(
            f"Cluster test could not be submitted on the head node {test.head_node_instance_id} "
            f"({state}): {detail}"
        )
    if now() >= deadline:
        where = f"Slurm job {detail}" if state == "Success" and detail else "the Slurm job"
        raise GateFailed(
            f"Cluster test gave no result before the deadline: {where} on partition "
            f"{test.partition} did not write {result_uri} (check squeue and "
            f"/tmp/trn-kit-cluster-test-<job id>.log on its first node)"
        )
    print(f"cluster all-reduce across {nodes} nodes running; waiting until {deadline.isoformat()}")
    return None


def kubernetes_cluster_stage(test: KubernetesClusterTest, deadline: datetime) -> dict[str, Any]:
    """Stage 2 on Kubernetes: the verdict of the Job's first pod, or why there is none."""
    if test.nodes < 2:
        verdict = NOT_ENOUGH_NODES
    else:
        s3 = client("s3")
        present = listed_keys(s3, test.bucket, test.run_prefix)
        result_key = test.run_prefix + test.result_name
        if result_key not in present:
            if now() < deadline:
                print(f"cluster all-reduce: {test.progress(present)}; waiting until {deadline.isoformat()}")
                return {"IsComplete": False}
            raise GateFailed(
                f"Cluster test gave no result before the deadline: Job {test.job_name} did not "
                f"write {test.uri(test.result_name)}; {test.progress(present)} (check "
                f"kubectl -n {test.namespace} get pods -l job-name={test.job_name} and the logs "
                f"of its pods)"
            )
        verdict = judge_cluster_result(read_object(s3, test.bucket, result_key), test.uri(test.result_name))
    print(verdict)
    return {"IsComplete": True, "Data": {"Summary": verdict}}


def submit_cluster_test(
    s3: Any, bucket: str, launch_key: str, test: ClusterTest, nodes: int, result_uri: str
) -> None:
    """Claim the run with a marker that only one writer can create, then send the command: a poll
    that dies in between, or one that overlaps another, never submits twice."""
    marker = {"SubmittedAt": now().isoformat(), "Nodes": nodes}
    try:
        put_json(s3, bucket, launch_key, marker, only_if_new=True)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
            print("another poll has claimed the cluster test; following it")
            return
        raise
    response = client("ssm").send_command(
        InstanceIds=[test.head_node_instance_id],
        DocumentName="AWS-RunShellScript",
        Comment="trn-kit handover gate: cluster all-reduce",
        Parameters={"commands": [test.submit_script(nodes, result_uri)]},
    )
    command_id = response["Command"]["CommandId"]
    put_json(s3, bucket, launch_key, {**marker, "CommandId": command_id})
    print(f"submitted the cluster all-reduce across {nodes} nodes (SSM command {command_id})")


def command_state(instance_id: str, command_id: str | None) -> tuple[str, str]:
    """(status, job id on success or the error text on failure) of the submission command."""
    if not command_id:
        return "Unknown", ""
    try:
        invocation = client("ssm").get_command_invocation(
            CommandId=command_id, InstanceId=instance_id
        )
    except ClientError as error:
        if error.response["Error"]["Code"] == "InvocationDoesNotExist":
            return "Pending", ""
        raise
    status = invocation["Status"]
    if status == "Success":
        return status, invocation.get("StandardOutputContent", "").strip()
    return status, invocation.get("StandardErrorContent", "").strip()[-500:]


def judge_cluster_result(body: bytes, uri: str) -> str:
    try:
        result = json.loads(body)
        if result.get("schema_version") != CLUSTER_RESULT_SCHEMA_VERSION:
            raise ValueError(f"schema_version {result.get('schema_version')!r}")
        verdict = result["verdict"]
        failures = [failure["message"] for failure in verdict["failures"]]
        if verdict["passed"]:
            return (
                f"Cluster all-reduce across {result['nodes']} nodes: "
                f"{result['bus_bandwidth_gibps']:.1f} GiB/s bus bandwidth "
                f"(floor {result['threshold']['min_bus_bandwidth_gibps']:.1f} GiB/s)"
            )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise GateFailed(f"Cluster test result {uri} is unreadable ({error})") from error
    raise GateFailed(f"Cluster test failed: {'; '.join(failures)}. Result: {uri}")


def listed_keys(s3: Any, bucket: str, prefix: str) -> set[str]:
    page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for item in page.get("Contents", [])}


def read_object(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def put_json(
    s3: Any, bucket: str, key: str, document: dict[str, Any], *, only_if_new: bool = False
) -> None:
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(document).encode(),
        ContentType="application/json",
        **({"IfNoneMatch": "*"} if only_if_new else {}),
    )


class GateFailed(RuntimeError):
    """Raised to fail the deploy; the Provider framework puts the message in the stack event."""

