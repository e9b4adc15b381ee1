"""Slurm orchestrator: AWS ParallelCluster deployed through its CloudFormation custom resource."""

from trn_constructs.slurm.cluster_config import PCLUSTER_VERSION, CustomAction
from trn_constructs.slurm.orchestrator import NEURON_DLAMI_SSM_PARAMETER, SlurmOrchestrator

__all__ = ["CustomAction", "NEURON_DLAMI_SSM_PARAMETER", "PCLUSTER_VERSION", "SlurmOrchestrator"]
