"""FAKE AWS for the handover's scenario tests: one Capacity Block of slots, an orchestrator that
launches into free slots (ParallelCluster's static nodes, or the EKS node group's Auto Scaling
group), nodes that burn in and write real reports, and the services the handover calls. Every
call goes through a real boto3 client checked against botocore's models (botocore_fake).

Modelled semantics, from AWS's documentation and ParallelCluster's sources (see the README's
handover section): a launched instance is pending for a minute, then running; a terminated one is
shutting-down for a minute; its slot in the block frees only after a cleanup of several minutes,
after which the orchestrator relaunches into it within a minute; instances and their reports are
what EC2 and S3 list, nothing else.

ParallelCluster's Capacity Block manager (slurm_plugin/capacity_block_manager.py), when modelled
(``capacity_block_checked``): clustermgtd holds the block's static nodes until a check of the
block's state that finds it active; it checks when more than 10 whole minutes have passed since the
last check, and at once when clustermgtd restarts (its manager starts uninitialised).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import itertools
import json
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.response import StreamingBody

from tests.support.botocore_fake import AwsError, ModelCheckedClient
from tests.support.node_reports import report_body
from trn_burnin.catalog import CATALOG
from trn_burnin.collective import AllReducePlan, BusBandwidthFloor, result_document

BLOCK_START = datetime(2026, 12, 10, 11, 30, tzinfo=timezone.utc)
RESERVATION = "cr-0123456789abcdef0"
BUCKET = "trn-kit-reports"
PENDING = timedelta(minutes=1)
SHUTTING_DOWN = timedelta(minutes=1)
SLOT_CLEANUP = timedelta(minutes=6)
RELAUNCH_DELAY = timedelta(minutes=1)
CAPACITY_BLOCK_CHECK_MINUTES = 10  # CAPACITY_BLOCK_RESERVATION_UPDATE_PERIOD; checked when exceeded
SUPERVISORCTL = "/opt/parallelcluster/pyenv/versions/3.12.11/envs/cookbook_virtualenv/bin/supervisorctl"
HEAD_NODE = "i-0head000000000000"


@dataclass
class Behaviour:
    """How a node of the block behaves once launched."""

    passes: bool = True
    report_after: timedelta = timedelta(minutes=15)  # boot, setup and burn-in
    reports: bool = True  # False: it never writes a report (hung, or its upload failed)
    body: bytes | None = None  # a report of the test's own making (malformed ones)


PASS, FAIL, SILENT = Behaviour(), Behaviour(passes=False), Behaviour(reports=False)


@dataclass
class Node:
    instance_id: str
    slot: int
    launched: datetime
    behaviour: Behaviour
    state: str = "pending"
    terminated_at: datetime | None = None
    reported: bool = False


@dataclass
class Cloud:
    slots: int = 4
    instances_per_ultraserver: int = 1
    orchestrator: str = "slurm"
    behaviours: list[Behaviour] = field(default_factory=list)  # in launch order; then PASS
    now: datetime = BLOCK_START
    block_start: datetime = BLOCK_START
    block_hours: int = 24
    slot_cleanup: timedelta = SLOT_CLEANUP
    relaunch: bool = True  # False: the slot never frees again (capacity lost)
    cluster_busbw_gibps: float = 150.0
    cluster_job: timedelta = timedelta(minutes=6)
    # Slurm: when clustermgtd last checked the block's state (None: not modelled, it sees it at once).
    capacity_block_checked: datetime | None = None
    clustermgtd_restarts: int = 0

    def __post_init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.objects: dict[str, tuple[bytes, datetime]] = {}
        self.parameters: dict[str, str] = {}
        self.messages: list[dict[str, str]] = []
        self.commands: dict[str, dict[str, Any]] = {}
        self.executions: dict[str, dict[str, Any]] = {}
        self.stack_status = "CREATE_IN_PROGRESS"
        self.alarm_actions: dict[str, bool] = {"TrnClusterStack-node-left-service": False}  # as deployed
        self.cleaning: dict[int, datetime] = {}  # slot -> when it frees
        self.desired = 0 if self.orchestrator == "eks" else self.slots
        self._ids = itertools.count(1)
        self._launch_order = itertools.count()
        checked = self.capacity_block_checked
        self._capacity_block_seen_active = checked is None or self.block_start <= checked
        self.clients = {
            name: ModelCheckedClient(name, service)
            for name, service in (
                ("ec2", Ec2(self)), ("s3", S3(self)), ("ssm", Ssm(self)), ("sns", Sns(self)),
                ("stepfunctions", StepFunctions(self)), ("autoscaling", AutoScaling(self)),
                ("eks", Eks(self)), ("cloudformation", CloudFormation(self)), ("cloudwatch", CloudWatch(self)),
            )
        }  # fmt: skip
        self._orchestrate()

    # -- the handover's client factory -----------------------------------------------------
    def client(self, service: str) -> Any:
        return self.clients[service].client

    def calls(self, service: str, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.clients[service].calls if name == operation]

    # -- time -------------------------------------------------------------------------------
    @property
    def block_active(self) -> bool:
        return self.block_start <= self.now < self.block_start + timedelta(hours=self.block_hours)

    def advance(self, seconds: float) -> None:
        end = self.now + timedelta(seconds=seconds)
        while self.now < end:
            self.now = min(end, self.now + timedelta(seconds=30))
            self._step()

    def _step(self) -> None:
        for node in list(self.nodes.values()):
            if node.state == "pending" and self.now >= node.launched + PENDING:
                node.state = "running"
            if node.state == "shutting-down" and self.now >= node.terminated_at + SHUTTING_DOWN:
                node.state = "terminated"
            if node.state == "running" and not node.reported and self.now >= node.launched + node.behaviour.report_after:
                node.reported = True
                if node.behaviour.reports:
                    self._write_report(node)
        for slot, free_at in list(self.cleaning.items()):
            if self.now >= free_at and self.relaunch:
                del self.cleaning[slot]
        checked = self.capacity_block_checked
        if checked is not None and int((self.now - checked).total_seconds() // 60) > CAPACITY_BLOCK_CHECK_MINUTES:
            self.check_capacity_block()
        self._orchestrate()
        for command in list(self.commands.values()):
            if command["status"] == "InProgress" and self.now >= command["done_at"]:
                command["finish"]()

    def _write_report(self, node: Node) -> None:
        stamp = self.now.strftime("%Y%m%dT%H%M%SZ")
        body = node.behaviour.body or report_body(
            node.instance_id, slow_core=None if node.behaviour.passes else 5, ultraserver_id=self.ultraserver(node.slot)
        )
        self.objects[f"burn-in/{node.instance_id}-{stamp}.json"] = (body, self.now)

    # -- the block and its orchestrator ------------------------------------------------------
    def ultraserver(self, slot: int) -> str | None:
        if self.instances_per_ultraserver <= 1:
            return None
        return f"cb-{slot // self.instances_per_ultraserver:017x}"

    def check_capacity_block(self) -> None:
        """clustermgtd reads the block's state (and, finding it active, releases its nodes)."""
        self.capacity_block_checked = self.now
        checked = self.capacity_block_checked
        self._capacity_block_seen_active = checked is None or self.block_start <= checked

    @property
    def capacity_block_reservation(self) -> bool:
        """Whether ParallelCluster still holds the block's nodes in its pcluster-<id> reservation."""
        return self.capacity_block_checked is not None and not self._capacity_block_seen_active

    def active(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.state in ("pending", "running")]

    def _orchestrate(self) -> None:
        """Launch into free slots up to the desired count, as clustermgtd or the ASG would."""
        if not self.block_active or self.capacity_block_reservation:
            return
        occupied = {n.slot for n in self.nodes.values() if n.state in ("pending", "running", "shutting-down")}
        free = [s for s in range(self.slots) if s not in occupied and s not in self.cleaning]
        while free and len(self.active()) < self.desired:
            self.launch(free.pop(0))

    def launch(self, slot: int) -> Node:
        order = next(self._launch_order)
        behaviour = self.behaviours[order] if order < len(self.behaviours) else PASS
        node = Node(f"i-{next(self._ids):017x}", slot, self.now, behaviour)
        self.nodes[node.instance_id] = node
        return node

    def terminate(self, instance_id: str) -> None:
        node = self.nodes[instance_id]
        if node.state in ("pending", "running"):
            node.state, node.terminated_at = "shutting-down", self.now
            self.cleaning[node.slot] = self.now + SHUTTING_DOWN + self.slot_cleanup + RELAUNCH_DELAY

    def put(self, key: str, document: Any) -> None:
        self.objects[key] = (json.dumps(document).encode(), self.now)


# -- services ------------------------------------------------------------------------------
class Ec2:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud

    def describe_instances(self, Filters=(), InstanceIds=(), **_):
        wanted = {f["Name"]: f["Values"] for f in Filters}
        found = []
        if wanted.get(f"tag:parallelcluster:node-type") == ["HeadNode"]:
            found.append({"InstanceId": HEAD_NODE, "LaunchTime": BLOCK_START - timedelta(hours=1)})
        for node in self.cloud.nodes.values():
            if "capacity-reservation-id" in wanted and RESERVATION not in wanted["capacity-reservation-id"]:
                continue
            if "instance-state-name" in wanted and node.state not in wanted["instance-state-name"]:
                continue
            if "tag:parallelcluster:node-type" in wanted:
                continue
            item = {"InstanceId": node.instance_id, "LaunchTime": node.launched, "State": {"Name": node.state}}
            if self.cloud.ultraserver(node.slot):
                item["CapacityBlockId"] = self.cloud.ultraserver(node.slot)
            found.append(item)
        return {"Reservations": [{"Instances": found}] if found else []}

    def terminate_instances(self, InstanceIds, **_):
        for instance_id in InstanceIds:
            if instance_id not in self.cloud.nodes:
                raise AwsError("InvalidInstanceID.NotFound", instance_id)
            self.cloud.terminate(instance_id)
        return {"TerminatingInstances": [{"InstanceId": i} for i in InstanceIds]}

    def describe_capacity_reservations(self, CapacityReservationIds, **_):
        if CapacityReservationIds != [RESERVATION]:
            raise AwsError("InvalidCapacityReservationId.NotFound", str(CapacityReservationIds))
        cloud = self.cloud
        end = cloud.block_start + timedelta(hours=cloud.block_hours)
        state = "scheduled" if cloud.now < cloud.block_start else ("active" if cloud.now < end else "expired")
        return {"CapacityReservations": [{
            "CapacityReservationId": RESERVATION, "State": state, "StartDate": cloud.block_start,
            "EndDate": end, "TotalInstanceCount": cloud.slots, "ReservationType": "capacity-block",
        }]}  # fmt: skip


class S3:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud

    def list_objects_v2(self, Bucket, Prefix="", ContinuationToken=None, **_):
        keys = sorted(k for k in self.cloud.objects if k.startswith(Prefix))
        start = int(ContinuationToken or 0)
        page = keys[start:start + 1000]
        response = {"IsTruncated": start + 1000 < len(keys), "KeyCount": len(page), "Contents": [
            {"Key": k, "LastModified": self.cloud.objects[k][1], "Size": len(self.cloud.objects[k][0]),
             "ETag": '"%s"' % hashlib.md5(self.cloud.objects[k][0]).hexdigest()}
            for k in page
        ]}  # fmt: skip
        if response["IsTruncated"]:
            response["NextContinuationToken"] = str(start + 1000)
        return response

    def get_object(self, Bucket, Key, **_):
        if Key not in self.cloud.objects:
            raise AwsError("NoSuchKey", Key, 404)
        body = self.cloud.objects[Key][0]
        return {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentLength": len(body)}

    def put_object(self, Bucket, Key, Body, IfNoneMatch=None, **_):
        if IfNoneMatch == "*" and Key in self.cloud.objects:
            raise AwsError("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412)
        self.cloud.objects[Key] = (Body if isinstance(Body, bytes) else Body.read(), self.cloud.now)
        return {"ETag": '"fake"'}


class Ssm:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud

    def put_parameter(self, Name, Value, Overwrite=False, **_):
        if len(Value) > 4096:
            raise AwsError("ValidationException", "value too long")
        if Name in self.cloud.parameters and not Overwrite:
            raise AwsError("ParameterAlreadyExists", Name)
        self.cloud.parameters[Name] = Value
        return {"Version": 1, "Tier": "Standard"}

    def get_parameter(self, Name, **_):
        if Name not in self.cloud.parameters:
            raise AwsError("ParameterNotFound", Name)
        return {"Parameter": {"Name": Name, "Value": self.cloud.parameters[Name], "Type": "String"}}

    def send_command(self, InstanceIds, DocumentName, Parameters, **_):
        command_id = f"00000000-0000-4000-8000-{len(self.cloud.commands) + 1:012d}"
        script = Parameters["commands"][0]
        record = {"script": script, "instance": InstanceIds[0], "status": "InProgress", "stdout": "",
                  "stderr": "", "done_at": self.cloud.now + timedelta(seconds=5)}
        record["finish"] = lambda: self._run(record)
        self.cloud.commands[command_id] = record
        return {"Command": {"CommandId": command_id, "DocumentName": DocumentName}}

    def _run(self, record: dict[str, Any]) -> None:
        """The head node: the cluster test's salloc holds the nodes and runs the test, which writes
        its result; SSM reports the command done when the test ends, with salloc's job id."""
        if "restart clustermgtd" in record["script"]:
            return self._restart_clustermgtd(record)
        match = re.search(r"/opt/slurm/bin/salloc .* /bin/sh -c (.+)$", record["script"])
        if not match:
            record["status"] = "Success"
            return
        job = shlex.split(shlex.split(match[1])[0].split("exec ", 1)[1].split(" >", 1)[0])
        result_uri = job[job.index("--result-uri") + 1]
        nodes = int(job[job.index("--nodes") + 1])
        cloud = self.cloud

        record["stdout"] = "101"

        def finish() -> None:
            record["status"] = "Success"
            spec = CATALOG["trn2"]
            plan, floor = AllReducePlan.for_cluster(spec, nodes), BusBandwidthFloor.for_spec(spec)
            failures = [] if cloud.cluster_busbw_gibps >= floor.min_bus_bandwidth_gibps else [
                f"all-reduce bus bandwidth {cloud.cluster_busbw_gibps:.1f} GiB/s across {nodes} nodes is below the "
                f"{floor.min_bus_bandwidth_gibps:.1f} GiB/s floor"]
            document = result_document(spec, plan, floor, cloud.now.strftime("%Y-%m-%dT%H:%M:%SZ"), failures,
                                       command=["nccom-test"], measured=cloud.cluster_busbw_gibps)
            cloud.put(result_uri.split("/", 3)[3], document)

        cloud.commands[f"job-{record['instance']}-{len(cloud.commands)}"] = {
            "status": "InProgress", "done_at": cloud.now + cloud.cluster_job, "finish": finish}

    def _restart_clustermgtd(self, record: dict[str, Any]) -> None:
        """The script as the head node runs it: only while the pcluster- reservation exists."""
        cloud = self.cloud
        record["status"] = "Success"
        if not cloud.capacity_block_reservation:
            record["stdout"] = f"no reservation pcluster-{RESERVATION}: clustermgtd already launches the nodes"
            return
        (pattern,) = re.findall(r"ctl=\$\(ls (\S+) ", record["script"])
        if not fnmatch.fnmatch(SUPERVISORCTL, pattern):
            record.update(status="Failed", stderr=f"no supervisorctl at {pattern}")
            return
        cloud.clustermgtd_restarts += 1
        cloud.check_capacity_block()  # the new clustermgtd's first loop

    def get_command_invocation(self, CommandId, InstanceId, **_):
        record = self.cloud.commands.get(CommandId)
        if record is None:
            raise AwsError("InvocationDoesNotExist", CommandId)
        return {"CommandId": CommandId, "InstanceId": InstanceId, "Status": record["status"],
                "StandardOutputContent": record["stdout"], "StandardErrorContent": record["stderr"]}


class Sns:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud

    def publish(self, TopicArn, Message, Subject=None, **_):
        self.cloud.messages.append({"subject": Subject or "", "message": Message})
        return {"MessageId": f"m-{len(self.cloud.messages)}"}


class StepFunctions:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud

    def list_executions(self, stateMachineArn, statusFilter=None, **_):
        return {"executions": [
            {"executionArn": arn, "stateMachineArn": stateMachineArn, "name": arn.rsplit(":", 1)[-1],
             "status": e["status"], "startDate": e["start"]}
            for arn, e in self.cloud.executions.items() if statusFilter in (None, e["status"])
        ]}  # fmt: skip

    def start_execution(self, stateMachineArn, name, input="{}", **_):
        arn = stateMachineArn.replace(":stateMachine:", ":execution:") + f":{name}"
        if arn in self.cloud.executions:
            if self.cloud.executions[arn]["input"] != input or self.cloud.executions[arn]["status"] != "RUNNING":
                raise AwsError("ExecutionAlreadyExists", arn)
        else:
            self.cloud.executions[arn] = {"status": "RUNNING", "input": input, "start": self.cloud.now}
        return {"executionArn": arn, "startDate": self.cloud.executions[arn]["start"]}

    def describe_execution(self, executionArn, **_):
        e = self.cloud.executions[executionArn]
        response = {"executionArn": executionArn, "stateMachineArn": executionArn.rsplit(":", 1)[0],
                    "status": e["status"], "startDate": e["start"]}
        for key in ("output", "error", "cause"):
            if key in e:
                response[key] = e[key]
        return response

    def stop_execution(self, executionArn, cause="", **_):
        self.cloud.executions[executionArn].update(status="ABORTED", cause=cause)
        return {"stopDate": self.cloud.now}


class AutoScaling:
    GROUP = "eks-trainium-0000"

    def __init__(self, cloud: Cloud):
        self.cloud = cloud

    def describe_auto_scaling_groups(self, AutoScalingGroupNames=(), **_):
        return {"AutoScalingGroups": [{
            "AutoScalingGroupName": self.GROUP, "MinSize": 0, "MaxSize": self.cloud.slots,
            "DesiredCapacity": self.cloud.desired, "DefaultCooldown": 300, "AvailabilityZones": ["us-east-2b"],
            "HealthCheckType": "EC2", "CreatedTime": BLOCK_START,
        }]}  # fmt: skip

    def set_desired_capacity(self, AutoScalingGroupName, DesiredCapacity, **_):
        self.cloud.desired = DesiredCapacity
        self.cloud._orchestrate()
        return {}

    def terminate_instance_in_auto_scaling_group(self, InstanceId, ShouldDecrementDesiredCapacity, **_):
        node = self.cloud.nodes.get(InstanceId)
        if node is None or node.state not in ("pending", "running"):
            raise AwsError("ValidationError", f"Instance Id not found - No managed instance found for instance ID: {InstanceId}")
        self.cloud.terminate(InstanceId)
        return {"Activity": {"ActivityId": "a-1", "AutoScalingGroupName": self.GROUP, "Cause": "terminate",
                             "StartTime": self.cloud.now, "StatusCode": "InProgress"}}


class Eks:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud

    def describe_nodegroup(self, clusterName, nodegroupName, **_):
        return {"nodegroup": {"nodegroupName": nodegroupName, "clusterName": clusterName,
                              "resources": {"autoScalingGroups": [{"name": AutoScaling.GROUP}]}}}


class CloudFormation:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud

    def describe_stacks(self, StackName, **_):
        return {"Stacks": [{"StackName": "TrnClusterStack", "StackId": StackName, "CreationTime": BLOCK_START,
                            "StackStatus": self.cloud.stack_status}]}


class CloudWatch:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud

    def _set(self, names: list[str], enabled: bool) -> dict:
        for name in names:  # CloudWatch ignores names of alarms that do not exist
            if name in self.cloud.alarm_actions:
                self.cloud.alarm_actions[name] = enabled
        return {}

    def enable_alarm_actions(self, AlarmNames, **_):
        return self._set(AlarmNames, True)

    def disable_alarm_actions(self, AlarmNames, **_):
        return self._set(AlarmNames, False)


class FakeKubernetes:
    """The Kubernetes API of the fake EKS cluster: a Node per running instance of the block, Jobs
    whose pods (the cluster test's) write their result to the run's folder after a while."""

    def __init__(self, cloud: Cloud):
        self.cloud = cloud
        self.jobs: dict[str, dict[str, Any]] = {}
        self.patches: list[tuple[str, Any, str]] = []

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        from trn_constructs.handover.handler.kube import KubeError

        if method == "GET" and path.startswith("/api/v1/nodes?labelSelector="):
            return {"items": [{"metadata": {"name": f"ip-10-0-0-{n.slot}.ec2.internal"}} for n in self.cloud.active()]}
        if method == "PATCH" and path.startswith("/api/v1/nodes/"):
            self.patches.append((path, body, content_type))
            return {}
        if method == "POST" and path.endswith("/jobs"):
            name = body["metadata"]["name"]
            if name in self.jobs:
                raise KubeError(409, "AlreadyExists")
            self.jobs[name] = body
            args = body["spec"]["template"]["spec"]["containers"][0]["args"]
            prefix = args[args.index("--rendezvous") + 1].split("/", 3)[3]
            nodes = body["spec"]["completions"]
            cloud = self.cloud

            def finish() -> None:
                spec = CATALOG["trn2"]
                plan, floor = AllReducePlan.for_cluster(spec, nodes), BusBandwidthFloor.for_spec(spec)
                cloud.put(prefix + "result.json", result_document(
                    spec, plan, floor, cloud.now.strftime("%Y-%m-%dT%H:%M:%SZ"), [], command=["nccom-test"],
                    measured=cloud.cluster_busbw_gibps))

            cloud.commands[f"job/{name}"] = {"status": "InProgress", "done_at": cloud.now + cloud.cluster_job,
                                             "finish": finish}
            return body
        raise AssertionError(f"unexpected Kubernetes call {method} {path}")
