"""The cluster configuration generator and the Slurm-specific configuration checks."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from tests.conftest import context_with
from trn_burnin.catalog import CATALOG
from trn_constructs.config import ConfigError, parse_config
from trn_constructs.slurm.cluster_config import (
    ClusterSpec,
    CustomAction,
    HeadNodeSpec,
    TrainiumQueueSpec,
    cluster_configuration,
    cluster_name,
    compute_resource_name,
)

BURN_IN = CustomAction(script="s3://kit-assets/burnin/run.sh", args=("--dtype", "bf16"))
NEURON = CustomAction(
    script="s3://kit-assets/node/install_neuron.sh", args=("--release", "2.33.0")
)


def example_spec(instance_type: str, instance_count: int) -> ClusterSpec:
    """Generator inputs with literal ids, as they look once CloudFormation has resolved them."""
    return ClusterSpec(
        region="us-west-2",
        head_node=HeadNodeSpec(
            instance_type="m7i.2xlarge",
            subnet_id="subnet-0123456789abcdef0",
            security_group_ids=("sg-0123456789abcdef0",),
            ssh_allowed_sources="pl-0123456789abcdef0",
            policy_arns=("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",),
            root_volume_gib=512,
        ),
        queue=TrainiumQueueSpec(
            instance_type=instance_type,
            instance_count=instance_count,
            reservation_id="cr-0123456789abcdef0",
            subnet_id="subnet-0123456789abcdef0",
            security_group_ids=("sg-0123456789abcdef0", "sg-0123456789abcdef1"),
            ami="ami-0123456789abcdef0",
            policy_arns=(),
            root_volume_gib=512,
        ),
        file_system_id="fs-0123456789abcdef0",
        mount_dir="/fsx",
        log_retention_days=30,
        tags={"team": "ml-platform"},
        head_node_bootstrap_seconds=3000,
        compute_node_bootstrap_seconds=2100,
    )


def with_actions(
    spec: ClusterSpec,
    head: CustomAction | None,
    queue: CustomAction | None,
    queue_start: CustomAction | None = None,
) -> dict:
    return cluster_configuration(
        replace(
            spec,
            head_node=replace(spec.head_node, on_node_configured=(head,) if head else ()),
            queue=replace(
                spec.queue,
                on_node_start=(queue_start,) if queue_start else (),
                on_node_configured=(queue,) if queue else (),
            ),
        )
    )


@pytest.fixture
def spec() -> ClusterSpec:
    return example_spec("trn2.48xlarge", 2)


def test_custom_actions_are_wired_when_given_and_can_fetch_their_script(spec):
    config = with_actions(spec, head=BURN_IN, queue=BURN_IN)
    (queue,) = config["Scheduling"]["SlurmQueues"]
    expected = {"OnNodeConfigured": {"Script": BURN_IN.script, "Args": ["--dtype", "bf16"]}}
    assert queue["CustomActions"] == expected
    assert config["HeadNode"]["CustomActions"] == expected
    read_only = [{"BucketName": "kit-assets", "EnableWriteAccess": False}]
    assert queue["Iam"]["S3Access"] == read_only
    assert config["HeadNode"]["Iam"]["S3Access"] == read_only


def test_a_start_action_runs_first_and_shares_the_read_only_bucket_access(spec):
    config = with_actions(spec, head=None, queue=BURN_IN, queue_start=NEURON)
    (queue,) = config["Scheduling"]["SlurmQueues"]
    assert list(queue["CustomActions"]) == ["OnNodeStart", "OnNodeConfigured"]
    assert queue["CustomActions"]["OnNodeStart"] == {
        "Script": NEURON.script, "Args": ["--release", "2.33.0"]
    }
    # Both scripts live in one bucket: one read-only grant.
    assert queue["Iam"]["S3Access"] == [{"BucketName": "kit-assets", "EnableWriteAccess": False}]


def test_several_actions_on_one_hook_run_as_a_sequence_in_order(spec):
    shipper = CustomAction(script="s3://kit-assets/ship.py", args=("install",))
    config = cluster_configuration(
        replace(spec, queue=replace(spec.queue, on_node_configured=(shipper, BURN_IN)))
    )
    (queue,) = config["Scheduling"]["SlurmQueues"]
    assert queue["CustomActions"]["OnNodeConfigured"] == {
        "Sequence": [
            {"Script": shipper.script, "Args": ["install"]},
            {"Script": BURN_IN.script, "Args": ["--dtype", "bf16"]},
        ]
    }
    assert queue["Iam"]["S3Access"] == [{"BucketName": "kit-assets", "EnableWriteAccess": False}]


def test_scripts_in_two_buckets_get_read_only_access_to_each(spec):
    start = CustomAction(script="s3://other-bucket/setup.sh")
    (queue,) = with_actions(spec, head=None, queue=BURN_IN, queue_start=start)[
        "Scheduling"
    ]["SlurmQueues"]
    assert queue["Iam"]["S3Access"] == [
        {"BucketName": "other-bucket", "EnableWriteAccess": False},
        {"BucketName": "kit-assets", "EnableWriteAccess": False},
    ]


def test_an_https_script_without_args_needs_no_bucket_access(spec):
    action = CustomAction(script="https://example.com/check.sh")
    config = with_actions(spec, head=None, queue=action)
    (queue,) = config["Scheduling"]["SlurmQueues"]
    assert queue["CustomActions"] == {"OnNodeConfigured": {"Script": action.script}}
    assert "Iam" not in queue
    assert "CustomActions" not in config["HeadNode"]


def test_without_an_ami_the_queue_uses_parallelclusters_own_image(spec):
    config = cluster_configuration(replace(spec, queue=replace(spec.queue, ami=None)))
    assert "Image" not in config["Scheduling"]["SlurmQueues"][0]
    assert config["Image"] == {"Os": "ubuntu2404"}


@pytest.mark.parametrize(
    ("stack_name", "expected"),
    [
        ("TrnClusterStack", "TrnClusterStack-slurm"),
        ("9th_cluster.dev", "c-9th-cluster-dev-slurm"),
        ("A" * 80, "A" * 54 + "-slurm"),
    ],
)
def test_cluster_name_is_valid_for_parallelcluster_and_differs_from_the_stack(stack_name, expected):
    name = cluster_name(stack_name)
    assert name == expected
    assert name != stack_name
    assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{0,59}", name)


@pytest.mark.parametrize("spec_key", sorted(CATALOG))
def test_compute_resource_names_fit_parallelclusters_format(spec_key):
    name = compute_resource_name(CATALOG[spec_key].instance_type)
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,24}", name)
    assert compute_resource_name("trn2.48xlarge") == "trn2-48xlarge"


def test_log_retention_parallelcluster_does_not_accept_is_rejected_for_slurm():
    with pytest.raises(ConfigError) as raised:
        parse_config(context_with({"logRetentionDays": 1096}))
    assert str(raised.value) == (
        "setting 'logRetentionDays': got 1096; allowed: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, "
        "180, 365, 400, 545, 731, 1827, 3653 (ParallelCluster's choices)"
    )
    # EKS has no such limit.
    assert parse_config(context_with({"logRetentionDays": 1096, "orchestrator": "eks"}))


def test_bootstrap_timeouts_are_the_specs(spec):
    timeouts = cluster_configuration(spec)["DevSettings"]["Timeouts"]
    assert timeouts == {"HeadNodeBootstrapTimeout": 3000, "ComputeNodeBootstrapTimeout": 2100}


def test_the_burn_in_never_counts_against_parallelclusters_timeouts():
    # The burn-in runs after a node's bootstrap (in the background), so however long it is set to
    # run, the bootstrap timeouts only cover boot and configuration.
    from trn_constructs.timeline import Budgets

    short, long = Budgets("slurm", "default", 30), Budgets("slurm", "default", 1800)
    assert short.compute_node_bootstrap_minutes == long.compute_node_bootstrap_minutes
    assert short.head_node_bootstrap_minutes == long.head_node_bootstrap_minutes


def test_a_queue_update_replaces_nodes_without_a_spare_slot(spec):
    assert cluster_configuration(spec)["Scheduling"]["SlurmSettings"] == {"QueueUpdateStrategy": "TERMINATE"}
