"""The EKS orchestrator (``orchestrator=eks``)."""

from trn_constructs.eks.orchestrator import EksOrchestrator
from trn_constructs.eks.scheduling import (
    BURN_IN_TAINT_EFFECT,
    BURN_IN_TAINT_KEY,
    BURN_IN_TAINT_VALUE,
)

__all__ = ["EksOrchestrator", "BURN_IN_TAINT_KEY", "BURN_IN_TAINT_VALUE", "BURN_IN_TAINT_EFFECT"]
