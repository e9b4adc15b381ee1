"""The one place that maps the ``orchestrator`` setting to its construct; everything that differs
between Slurm and EKS lives behind the construct (how nodes run the burn-in, its HandoverPlan)."""

from __future__ import annotations

from typing import Callable, Mapping

from trn_constructs.eks import EksOrchestrator
from trn_constructs.eks import cluster_name as eks_cluster_name
from trn_constructs.slurm import SlurmOrchestrator
from trn_constructs.slurm.cluster_config import cluster_name as slurm_cluster_name

ORCHESTRATORS: Mapping[str, tuple[str, type, Callable[[str], str]]] = {
    # setting: (construct id, construct, the cluster's name from the cluster stack's name)
    "slurm": ("Slurm", SlurmOrchestrator, slurm_cluster_name),
    "eks": ("Eks", EksOrchestrator, eks_cluster_name),
}
