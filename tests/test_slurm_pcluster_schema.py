"""The generated cluster configuration, checked by ParallelCluster's own schema and validators.

`aws-parallelcluster` pins CDK v1 and jsii 1.85, so it lives in its own virtual environment
(`.venv-pcluster`, made by `make pcluster-venv`, which `make setup` and `make test` run) and the
checks run in a subprocess: tests/pcluster_schema/validate.py. Checked are the configurations the
stack synthesizes on ParallelCluster's official AMI (the default) and on a custom image
(`imageSsmParameter`), with deploy-time references replaced by realistic ids, and the generator's
output for every catalog entry and with custom actions. ParallelCluster's own code also names the
official AMI the image pipeline starts from.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

from pathlib import Path

import pytest

from tests.conftest import REPO, synth
from tests.test_slurm_cluster_config import BURN_IN, NEURON, example_spec, with_actions
from trn_burnin.catalog import CATALOG
from trn_constructs.slurm import cluster_config as cluster_config_module
from trn_constructs.slurm.cluster_config import (
    CLUSTER_USER,
    NODE_OS,
    OFFICIAL_IMAGE_NAME_PATTERN,
    PCLUSTER_VERSION,
    cluster_configuration,
)

PCLUSTER_VENV = REPO / ".venv-pcluster"
PCLUSTER_PYTHON = PCLUSTER_VENV / "bin" / "python"
VALIDATOR = REPO / "tests" / "pcluster_schema" / "validate.py"
MAKE_HINT = "run `make pcluster-venv` (`make test` does it)"

PSEUDO_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-2",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::AccountId": "123456789012",
}
# What a Ref or Fn::GetAtt of a resource type returns at deploy time: (type, attribute) -> prefix.
ID_PREFIXES = {
    ("AWS::EC2::Subnet", None): "subnet",
    ("AWS::EC2::SecurityGroup", "GroupId"): "sg",
    ("AWS::FSx::FileSystem", None): "fs",
    ("AWS::EC2::PrefixList", "PrefixListId"): "pl",
    ("AWS::S3::Bucket", None): "trn-kit-reports",
    ("AWS::Logs::LogGroup", None): "/aws/containerinsights/trn-kit/performance",
}
CUSTOM_AMI_ID = "ami-0a1b2c3d4e5f60718"  # stands in for the imageSsmParameter reference
IMAGE_SSM_PARAMETER = "/trn-kit/ami/slurm"


def deploy_time(value, resources: dict):
    """``value`` with every CloudFormation reference replaced by a realistic deploy-time value."""
    if isinstance(value, list):
        return [deploy_time(item, resources) for item in value]
    if isinstance(value, str):
        return CUSTOM_AMI_ID if value.startswith("{{resolve:ssm:") else value
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        name = value["Ref"]
        return PSEUDO_PARAMETERS.get(name) or _physical_id(name, None, resources)
    if set(value) == {"Fn::GetAtt"}:
        return _physical_id(*value["Fn::GetAtt"], resources)
    if set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(deploy_time(part, resources) for part in parts)
    if any(key.startswith("Fn::") for key in value):
        raise AssertionError(f"no deploy-time stand-in for {value}")
    return {key: deploy_time(item, resources) for key, item in value.items()}


def _physical_id(logical_id: str, attribute: str | None, resources: dict) -> str:
    resource_type = resources[logical_id]["Type"]
    if (resource_type, attribute) == ("AWS::IAM::ManagedPolicy", None):
        return f"arn:aws:iam::{PSEUDO_PARAMETERS['AWS::AccountId']}:policy/{logical_id}"
    prefix = ID_PREFIXES.get((resource_type, attribute))
    if prefix is None:
        raise AssertionError(f"no deploy-time stand-in for {resource_type} {attribute or 'Ref'}")
    return f"{prefix}-{hashlib.sha256(logical_id.encode()).hexdigest()[:17]}"


def _stack_request(label: str, synthesized) -> dict:
    resources = synthesized.template_json["Resources"]
    (cluster,) = [r for r in resources.values() if r["Type"] == "Custom::PclusterCluster"]
    properties = cluster["Properties"]
    return {
        "label": label,
        "cluster_name": properties["ClusterName"],
        "config": deploy_time(properties["ClusterConfiguration"], resources),
    }


def _requests(default_stack) -> list[dict]:
    requests = [
        _stack_request("default-stack", default_stack),
        _stack_request("image-ssm-parameter-stack", synth(imageSsmParameter=IMAGE_SSM_PARAMETER)),
    ]
    for key, entry in CATALOG.items():
        # Two whole UltraServers (or two instances), the smallest multi-node block of each type.
        spec = example_spec(entry.instance_type, 2 * entry.instances_per_ultraserver)
        requests.append(_request(key, cluster_configuration(spec)))
    hooks = with_actions(
        example_spec("trn2.48xlarge", 2), head=BURN_IN, queue=BURN_IN, queue_start=NEURON
    )
    requests.append(_request("custom-actions", hooks))
    return requests


def _request(label: str, config: dict) -> dict:
    return {"label": label, "cluster_name": "trn-cluster-slurm", "config": config}


def run_validator(requests: list[dict]) -> dict:
    """ParallelCluster's verdict on each request, from its own environment."""
    if not PCLUSTER_PYTHON.exists():
        pytest.fail(f"ParallelCluster's environment {PCLUSTER_VENV} is missing: {MAKE_HINT}")
    official_image = {"os": NODE_OS, "architecture": "x86_64"}
    completed = subprocess.run(
        [str(PCLUSTER_PYTHON), str(VALIDATOR)],
        input=json.dumps({"configs": requests, "official_image": official_image}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def pcluster_report(default_stack):
    return run_validator(_requests(default_stack))


def test_the_schema_is_the_pinned_parallelcluster_version(pcluster_report):
    assert pcluster_report["pcluster_version"] == PCLUSTER_VERSION, (
        f".venv-pcluster has ParallelCluster {pcluster_report['pcluster_version']}, the kit pins "
        f"{PCLUSTER_VERSION}: {MAKE_HINT}"
    )


def test_every_stated_bootstrap_timeout_default_is_parallelclusters_own(pcluster_report):
    """README and the cluster configuration's comment state pcluster's default, in seconds and
    minutes; it must be the one in the pinned version's pcluster/constants.py."""
    default = pcluster_report["node_bootstrap_timeout_seconds"]
    for path in (REPO / "README.md", Path(cluster_config_module.__file__)):
        text = " ".join(path.read_text().replace("#", " ").split())
        stated = re.findall(r"default bootstrap timeout, (\d+) s \((\d+) minutes", text)
        assert stated, f"{path.name} states no default bootstrap timeout"
        assert set(stated) == {(str(default), str(default // 60))}, path.name


def test_the_connect_command_user_is_parallelclusters_default_user_of_the_node_os(pcluster_report):
    assert CLUSTER_USER == pcluster_report["default_user"]


def test_the_image_pipeline_looks_up_the_ami_parallelcluster_itself_would_use(pcluster_report):
    assert OFFICIAL_IMAGE_NAME_PATTERN == pcluster_report["official_image_name_prefix"] + "*"


@pytest.mark.parametrize(
    "label", ["default-stack", "image-ssm-parameter-stack", *CATALOG, "custom-actions"]
)
def test_parallelcluster_accepts_the_configuration(pcluster_report, label):
    result = pcluster_report["results"][label]
    assert result["errors"] == []
    # Loading may only try what pcluster does on every load (caching reservations); the call is
    # refused, so nothing here depends on an AWS account.
    assert set(result["refused_aws_calls"]) <= {"DescribeCapacityReservations"}


def test_the_check_rejects_what_parallelcluster_rejects():
    """The check is live: Min != Max on a Capacity Block queue, an OS pcluster dropped, a root
    volume smaller than the AMI's and one larger than gp3 allows, fail."""
    counts = cluster_configuration(example_spec("trn2.48xlarge", 2))
    counts["Scheduling"]["SlurmQueues"][0]["ComputeResources"][0]["MinCount"] = 1
    old_os = cluster_configuration(example_spec("trn2.48xlarge", 2))
    old_os["Image"]["Os"] = "ubuntu2004"
    small = cluster_configuration(example_spec("trn2.48xlarge", 2))
    small["HeadNode"]["LocalStorage"]["RootVolume"]["Size"] = 20
    huge = cluster_configuration(example_spec("trn2.48xlarge", 2))
    huge["Scheduling"]["SlurmQueues"][0]["ComputeSettings"]["LocalStorage"]["RootVolume"]["Size"] = 20000
    results = run_validator([
        _request("counts", counts), _request("os", old_os), _request("small", small),
        _request("huge", huge),
    ])["results"]
    assert any("same value of min count" in error for error in results["counts"]["errors"])
    assert any(error.startswith("schema:") and "Os" in error for error in results["os"]["errors"])
    assert results["small"]["errors"] == [
        "RootVolumeSizeValidator: Root volume size 20 GiB must be equal or greater than the volume "
        "size of the AMI: 45 GiB."
    ]
    assert results["huge"]["errors"] == [
        "EbsVolumeTypeSizeValidator: The size of gp3 volumes can not exceed 16384 GiB."
    ]
