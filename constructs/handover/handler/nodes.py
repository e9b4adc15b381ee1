"""The one seam between the handover and the orchestrator: how a node is replaced, how the cluster
stops taking work, how the block is asked for, and how the cluster test starts."""

from __future__ import annotations

from typing import Protocol

from .collective import ClusterTestRunner
from .settings import Settings


class NodeOperations(ClusterTestRunner, Protocol):
    def ensure_capacity(self) -> None:
        """Ask for every instance the block reserves (a no-op where the orchestrator does)."""

    def replace(self, instance_id: str) -> None:
        """Terminate a failed node's instance so the orchestrator relaunches into its slot."""

    def stop_new_work(self, reason: str) -> str:
        """Let running jobs finish and start no new ones; returns what was done."""


def node_operations(settings: Settings) -> NodeOperations:
    if settings.kubernetes is not None:
        from .kubernetes import KubernetesNodes

        return KubernetesNodes(settings)
    from .slurm import SlurmNodes

    return SlurmNodes(settings)
