"""The ParallelCluster cluster configuration, generated from typed inputs.

This module is the only source of the cluster's configuration: `cluster_configuration` returns the
document ParallelCluster's custom resource takes as ``ClusterConfiguration`` (the YAML of `pcluster
create-cluster`, as an object). Values may be literal strings or CloudFormation tokens; nothing here
resolves them. The tests load the result with ParallelCluster's own schema, at the version pinned in
``parallelcluster-version`` next to this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

# The one pin of ParallelCluster: the provider template version and the schema the tests load.
PCLUSTER_VERSION = (Path(__file__).parent / "parallelcluster-version").read_text().strip()

# ParallelCluster's name for Ubuntu 24.04: every node boots ParallelCluster's official AMI for it
# (or, for compute nodes, a custom image made from that AMI).
NODE_OS = "ubuntu2404"
# ParallelCluster's default OS user on NODE_OS (its OS_MAPPING): it exists on every node, so jobs
# submitted as it run on the compute nodes. Session Manager's own ssm-user exists only on the
# instance a session was opened on, the head node.
CLUSTER_USER = "ubuntu"
# How ParallelCluster names that AMI (pcluster list-official-images; the tests check the pattern
# against ParallelCluster's own code): its version, the OS, the architecture (Trainium hosts are
# x86_64), then a build stamp.
OFFICIAL_IMAGE_NAME_PATTERN = f"aws-parallelcluster-{PCLUSTER_VERSION}-ubuntu-2404-lts-hvm-x86_64*"
QUEUE_NAME = "trainium"
SHARED_STORAGE_NAME = "fsx"

# Replaces static nodes of a queue whose custom actions or image change by terminating them all,
# then relaunching (a full Capacity Block has no spare slot for a new node before the old one
# goes); the new nodes burn in before they take work. DRAIN would wait for running jobs, but
# replaces a drained node through clustermgtd's terminate_drain_nodes, which the kit turns off so
# that a quarantined node stays (node/keep_quarantined_nodes.sh).
QUEUE_UPDATE_STRATEGY = "TERMINATE"
# Queue and compute resource names: lowercase letters, digits and hyphens, at most 25 characters.
_RESOURCE_NAME_MAX = 25
# Cluster names: a letter, then letters, digits and hyphens, at most 60 characters.
_CLUSTER_NAME_MAX = 60


@dataclass(frozen=True)
class CustomAction:
    """A script ParallelCluster runs on a node (``s3://`` or ``https://`` URI) and its arguments."""

    script: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """What the head node and the queue both have: placement, groups, policies, setup hooks
    (OnNodeStart runs before ParallelCluster configures the node, OnNodeConfigured after)."""

    instance_type: str
    subnet_id: str
    security_group_ids: tuple[str, ...]
    policy_arns: tuple[str, ...]
    root_volume_gib: int
    on_node_start: tuple[CustomAction, ...] = ()
    on_node_configured: tuple[CustomAction, ...] = ()

    @property
    def custom_actions(self) -> dict[str, tuple[CustomAction, ...]]:
        hooks = {"OnNodeStart": self.on_node_start, "OnNodeConfigured": self.on_node_configured}
        return {hook: actions for hook, actions in hooks.items() if actions}


@dataclass(frozen=True, kw_only=True)
class HeadNodeSpec(NodeSpec):
    ssh_allowed_sources: str  # a CIDR or a prefix list id; ParallelCluster's default is 0.0.0.0/0
    on_node_updated: tuple[CustomAction, ...] = ()

    @property
    def custom_actions(self) -> dict[str, tuple[CustomAction, ...]]:
        return {**super().custom_actions, **({"OnNodeUpdated": self.on_node_updated} if self.on_node_updated else {})}


@dataclass(frozen=True, kw_only=True)
class TrainiumQueueSpec(NodeSpec):
    instance_count: int
    reservation_id: str
    ami: str | None  # None: ParallelCluster's official AMI for NODE_OS


@dataclass(frozen=True)
class ClusterSpec:
    region: str
    head_node: HeadNodeSpec
    queue: TrainiumQueueSpec
    file_system_id: str
    mount_dir: str
    log_retention_days: int
    tags: Mapping[str, str]
    head_node_bootstrap_seconds: int
    compute_node_bootstrap_seconds: int


def cluster_name(stack_name: str) -> str:
    """A valid ParallelCluster name derived from, and different from, the stack's name.

    ParallelCluster creates a stack of its own named after the cluster, so the two must differ.
    """
    name = re.sub(r"[^A-Za-z0-9-]", "-", stack_name)
    if not name[:1].isalpha():
        name = "c-" + name
    suffix = "-slurm"
    return name[: _CLUSTER_NAME_MAX - len(suffix)].rstrip("-") + suffix


def compute_resource_name(instance_type: str) -> str:
    """``trn2.48xlarge`` -> ``trn2-48xlarge``: an instance type as a ParallelCluster name."""
    return re.sub(r"[^a-z0-9]+", "-", instance_type.lower()).strip("-")[:_RESOURCE_NAME_MAX]


def cluster_configuration(spec: ClusterSpec) -> dict[str, Any]:
    return {
        "Region": spec.region,
        "Image": {"Os": NODE_OS},
        # IMDSv2 only, on every node.
        "Imds": {"ImdsSupport": "v2.0"},
        "HeadNode": _head_node(spec.head_node),
        # Slurm accounting stays off: no SlurmSettings.Database, so no database to run.
        "Scheduling": {
            "Scheduler": "slurm",
            "SlurmSettings": {"QueueUpdateStrategy": QUEUE_UPDATE_STRATEGY},
            "SlurmQueues": [_trainium_queue(spec.queue)],
        },
        "SharedStorage": [
            {
                "Name": SHARED_STORAGE_NAME,
                "StorageType": "FsxLustre",
                "MountDir": spec.mount_dir,
                "FsxLustreSettings": {"FileSystemId": spec.file_system_id},
            }
        ],
        "Monitoring": {
            "Logs": {
                "CloudWatch": {"Enabled": True, "RetentionInDays": spec.log_retention_days}
            }
        },
        "Tags": [{"Key": key, "Value": value} for key, value in sorted(spec.tags.items())],
        # From the kit's timeline (trn_constructs.timeline): a compute node boots and configures
        # (its burn-in runs after, in the background); the head node configures itself and, when
        # the block is active, waits for every static node to be up. Never below ParallelCluster's
        # default bootstrap timeout, 2100 s (35 minutes, head and compute alike).
        "DevSettings": {"Timeouts": {
            "HeadNodeBootstrapTimeout": spec.head_node_bootstrap_seconds,
            "ComputeNodeBootstrapTimeout": spec.compute_node_bootstrap_seconds,
        }},
    }


def _head_node(head: HeadNodeSpec) -> dict[str, Any]:
    node: dict[str, Any] = {
        "InstanceType": head.instance_type,
        "Networking": {
            "SubnetId": head.subnet_id,
            "AdditionalSecurityGroups": list(head.security_group_ids),
        },
        # No key pair: people connect with Session Manager. ParallelCluster still opens port 22 to
        # AllowedIps (0.0.0.0/0 unless set), so the allowed sources are set explicitly.
        "Ssh": {"AllowedIps": head.ssh_allowed_sources},
        "LocalStorage": {"RootVolume": {"Size": head.root_volume_gib, "Encrypted": True}},
        "Imds": {"Secured": True},
    }
    node.update(_iam(head))
    node.update(_custom_actions(head))
    return node


def _trainium_queue(queue: TrainiumQueueSpec) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "Name": QUEUE_NAME,
        "CapacityType": "CAPACITY_BLOCK",
        "ComputeResources": [
            {
                "Name": compute_resource_name(queue.instance_type),
                "InstanceType": queue.instance_type,
                # A Capacity Block's instances are all static: ParallelCluster requires Min = Max.
                "MinCount": queue.instance_count,
                "MaxCount": queue.instance_count,
                "Efa": {"Enabled": True},
                "CapacityReservationTarget": {"CapacityReservationId": queue.reservation_id},
            }
        ],
        "Networking": {
            "SubnetIds": [queue.subnet_id],
            "AdditionalSecurityGroups": list(queue.security_group_ids),
            # The block's instances are already placed; a placement group can only fail the launch.
            "PlacementGroup": {"Enabled": False},
        },
        "ComputeSettings": {
            "LocalStorage": {"RootVolume": {"Size": queue.root_volume_gib, "Encrypted": True}}
        },
    }
    if queue.ami is not None:
        spec["Image"] = {"CustomAmi": queue.ami}
    spec.update(_iam(queue))
    spec.update(_custom_actions(queue))
    return spec


def _iam(node: NodeSpec) -> dict[str, Any]:
    iam: dict[str, Any] = {}
    if node.policy_arns:
        iam["AdditionalIamPolicies"] = [{"Policy": arn} for arn in node.policy_arns]
    # The node downloads its custom action scripts itself: read-only, once per bucket.
    buckets = dict.fromkeys(
        bucket
        for actions in node.custom_actions.values()
        for action in actions
        if (bucket := _s3_bucket(action.script))
    )
    if buckets:
        iam["S3Access"] = [{"BucketName": b, "EnableWriteAccess": False} for b in buckets]
    return {"Iam": iam} if iam else {}


def _script(action: CustomAction) -> dict[str, Any]:
    script: dict[str, Any] = {"Script": action.script}
    if action.args:
        script["Args"] = list(action.args)
    return script


def _custom_actions(node: NodeSpec) -> dict[str, Any]:
    """One action as ParallelCluster's plain form; several, in order, as its Sequence form."""
    rendered = {
        hook: _script(actions[0]) if len(actions) == 1 else {"Sequence": [_script(a) for a in actions]}
        for hook, actions in node.custom_actions.items()
    }
    return {"CustomActions": rendered} if rendered else {}


def _s3_bucket(uri: str) -> str | None:
    match = re.match(r"s3://([^/]+)/", uri)
    return match.group(1) if match else None
