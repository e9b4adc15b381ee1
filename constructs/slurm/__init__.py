"""Slurm orchestrator: AWS ParallelCluster deployed through its CloudFormation custom resource."""

from trn_constructs.slurm.cluster_config import (
    OFFICIAL_IMAGE_NAME_PATTERN,
    PCLUSTER_VERSION,
    CustomAction,
)
from trn_constructs.slurm.neuron_install import neuron_install
from trn_constructs.slurm.orchestrator import SlurmOrchestrator

__all__ = [
    "CustomAction",
    "OFFICIAL_IMAGE_NAME_PATTERN",
    "PCLUSTER_VERSION",
    "SlurmOrchestrator",
    "neuron_install",
]
