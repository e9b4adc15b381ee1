"""HandoverPlan: what differs per orchestrator, as the handover needs it. Each orchestrator builds
its own (SlurmOrchestrator.handover_plan, EksOrchestrator.handover_plan); nothing else branches on
which one it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam


@dataclass(frozen=True)
class KubernetesAccess:
    """An EKS access entry for the handover's role, in these Kubernetes groups (bound by the
    orchestrator's RBAC to exactly what the handover does)."""

    cluster_name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class HandoverPlan:
    orchestrator: str  # "slurm" or "eks": names the settings block in the handover's plan.json
    settings: Mapping[str, Any]  # that block: handler/settings.SlurmSettings or KubernetesSettings
    # What replacing a node, stopping new work and starting the cluster test may do, nothing more.
    statements: tuple[iam.PolicyStatement, ...]
    findings: tuple[tuple[str, str], ...]  # cdk-nag findings those statements raise, with the reason
    # Changes whenever the orchestrator's definition of the Trainium nodes does (instance type,
    # image, launch template, queue): the next deploy then hands over the nodes that come of it.
    node_fingerprint: str
    # Where the handover's functions must run to reach the orchestrator (EKS: its private endpoint).
    vpc: ec2.IVpc | None = None
    subnets: tuple[ec2.ISubnet, ...] = ()
    security_groups: tuple[ec2.ISecurityGroup, ...] = ()
    kubernetes: KubernetesAccess | None = None
