"""The EKS orchestrator (``orchestrator=eks``)."""

from trn_constructs.eks.orchestrator import EksOrchestrator, cluster_name
from trn_constructs.eks.scheduling import (
    BURN_IN_TAINT_EFFECT,
    BURN_IN_TAINT_KEY,
    BURN_IN_TAINT_VALUE,
)

__all__ = [
    "EksOrchestrator",
    "cluster_name",
    "BURN_IN_TAINT_KEY",
    "BURN_IN_TAINT_VALUE",
    "BURN_IN_TAINT_EFFECT",
]
