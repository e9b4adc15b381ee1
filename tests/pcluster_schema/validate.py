"""Validate cluster configurations with ParallelCluster's own code, offline.

Runs under the ParallelCluster virtual environment (`.venv-pcluster/bin/python`), never the kit's:
`aws-parallelcluster` pins CDK v1 and jsii 1.85. Reads JSON from stdin,

    {"configs": [{"label": str, "cluster_name": str, "config": {...cluster configuration...}}],
     "official_image": {"os": str, "architecture": str}}   # optional

and writes JSON to stdout: the installed ParallelCluster version, its default node bootstrap
timeout, for "official_image" (if asked) the name prefix ParallelCluster looks its official AMI up
by and that OS's default user, and, per label, the errors found by

1. `ClusterSchema(cluster_name=...).load(config)`, exactly how pcluster loads a configuration file
   (every field, type, allowed value and cross-field check of the schema);
2. those of pcluster's own configuration validators that need no AWS call: cluster, queue, compute
   resource and storage names, the Capacity Block size rules (MinCount = MaxCount > 0), and the
   head and compute root volumes as pcluster checks them (volume type and size bounds; at least
   the AMI's size, which pcluster reads from EC2: here its default root volume size stands in,
   45 GiB, what the 3.16.1 official AMIs have).

Every AWS API call is refused before it leaves the process (pcluster tries to cache capacity
reservations while loading); the refused operations are reported, so a new one shows up in review.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import botocore.client
from botocore.exceptions import ClientError

_refused: list[str] = []


def _refuse(_client, operation_name, _params):
    _refused.append(operation_name)
    error = {"Error": {"Code": "OfflineValidation", "Message": "no AWS calls"}}
    raise ClientError(error, operation_name)


botocore.client.BaseClient._make_api_call = _refuse
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
logging.disable(logging.WARNING)  # pcluster logs every refused call

from marshmallow import ValidationError  # noqa: E402
from pcluster.aws.ec2 import Ec2Client  # noqa: E402
from pcluster.constants import (  # noqa: E402
    EBS_ROOT_VOLUME_SIZE_DEFAULT,
    NODE_BOOTSTRAP_TIMEOUT,
    OS_MAPPING,
)
from pcluster.schemas.cluster_schema import ClusterSchema  # noqa: E402
from pcluster.utils import get_installed_version  # noqa: E402
from pcluster.validators.cluster_validators import (  # noqa: E402
    ClusterNameValidator,
    ComputeResourceSizeValidator,
    NameValidator,
    RootVolumeSizeValidator,
    SharedStorageNameValidator,
)
from pcluster.validators.ebs_validators import EbsVolumeTypeSizeValidator  # noqa: E402
from pcluster.validators.common import FailureLevel  # noqa: E402


def _root_volume_validations(root_volume):
    # Unset, pcluster takes the AMI's size, as it does here.
    size = root_volume.size or EBS_ROOT_VOLUME_SIZE_DEFAULT
    yield RootVolumeSizeValidator, {
        "root_volume_size": size, "ami_volume_size": EBS_ROOT_VOLUME_SIZE_DEFAULT,
    }
    yield EbsVolumeTypeSizeValidator, {"volume_type": root_volume.volume_type, "volume_size": size}


def _offline_validations(cluster_name, cluster):
    yield ClusterNameValidator, {"name": cluster_name, "scheduling": cluster.scheduling}
    yield from _root_volume_validations(cluster.head_node.local_storage.root_volume)
    for storage in cluster.shared_storage:
        yield SharedStorageNameValidator, {"name": storage.name}
    for queue in cluster.scheduling.queues:
        yield NameValidator, {"name": queue.name}
        yield from _root_volume_validations(queue.compute_settings.local_storage.root_volume)
        for resource in queue.compute_resources:
            yield NameValidator, {"name": resource.name}
            yield ComputeResourceSizeValidator, {
                "min_count": resource.min_count,
                "max_count": resource.max_count,
                "capacity_type": queue.capacity_type,
            }


def validate(cluster_name: str, config: dict) -> list[str]:
    # pcluster reads the region from the environment while building its model.
    os.environ["AWS_DEFAULT_REGION"] = config.get("Region", "us-east-1")
    try:
        cluster = ClusterSchema(cluster_name=cluster_name).load(config)
    except ValidationError as error:
        return [f"schema: {json.dumps(error.messages, sort_keys=True)}"]
    errors = []
    for validator, arguments in _offline_validations(cluster_name, cluster):
        for failure in validator().execute(**arguments):
            if failure.level == FailureLevel.ERROR:
                errors.append(f"{failure.validator_type}: {failure.message}")
    return errors


def main() -> None:
    request = json.load(sys.stdin)
    results = {}
    for item in request["configs"]:
        _refused.clear()
        errors = validate(item["cluster_name"], item["config"])
        results[item["label"]] = {"errors": errors, "refused_aws_calls": sorted(set(_refused))}
    answer = {
        "pcluster_version": get_installed_version(),
        # The default of both DevSettings.Timeouts.HeadNodeBootstrapTimeout and
        # ComputeNodeBootstrapTimeout.
        "node_bootstrap_timeout_seconds": NODE_BOOTSTRAP_TIMEOUT,
        "results": results,
    }
    if "official_image" in request:
        image = request["official_image"]
        # The prefix of the name filter pcluster's own official-image lookup uses (it adds "*").
        answer["official_image_name_prefix"] = Ec2Client._get_official_image_name_prefix(
            image["os"], image["architecture"]
        )
        # The OS user ParallelCluster sets up on every node of that OS.
        answer["default_user"] = OS_MAPPING[image["os"]]["user"]
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
