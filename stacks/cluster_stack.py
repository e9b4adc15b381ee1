"""TrnClusterStack: the handover and the operations of one Trainium cluster, on top of its
infrastructure stack (stacks/infra_stack.py), which `cdk deploy TrnClusterStack` deploys first."""

from __future__ import annotations

import json

from aws_cdk import CfnOutput
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.base import KitStack
from stacks.infra_stack import DRY_RUN_NOTE, TrnClusterInfraStack
from trn_constructs.config import ClusterConfig
from trn_constructs.handover import Handover, state_parameter_name
from trn_constructs.operations import Operations
from trn_constructs.operations.operations import node_alarm_name
from trn_constructs.timeline import Budgets


class TrnClusterStack(KitStack):
    """Attributes: ``infra`` and, unless the infrastructure is a purchase dry run, ``handover``
    and ``operations``."""

    def __init__(self, scope: Construct, construct_id: str, *, config: ClusterConfig, infra: TrnClusterInfraStack) -> None:
        super().__init__(
            scope,
            construct_id,
            config=config,
            description=(
                f"Trainium cluster handover and operations: {config.capacity.instance_count} x "
                f"{config.capacity.instance.instance_type} ({config.orchestrator})"
            ),
        )
        self.infra = infra
        self.add_stack_dependency(infra)
        if infra.purchase_only:
            # Nothing to hand over; the state says so where a handover's would be.
            ssm.StringParameter(
                self, "HandoverState", parameter_name=state_parameter_name(self.stack_name),
                string_value=json.dumps({"state": "dry-run", "summary": DRY_RUN_NOTE[:1000]}),
            )  # fmt: skip
            CfnOutput(self, "HandoverStateParameter", value=state_parameter_name(self.stack_name),
                      description="SSM parameter with the handover's state: a dry run has none to run")
            return
        image = "kit" if config.image_ssm_parameter else "default"
        self.handover = Handover(
            self,
            "Handover",
            plan=infra.orchestrator.handover_plan(),
            artifacts=infra.burn_in,
            capacity=infra.capacity,
            burn_in=config.burn_in,
            budgets=Budgets(config.orchestrator, image, config.burn_in.duration_seconds),
            cluster_test=infra.cluster_test,
            alerts=infra.alerts,
            node_alarm=node_alarm_name(self.stack_name),
            log_retention=config.log_retention,
        )
        self.handover.add_outputs()
        # Beside the handover, not after it: the node-count alarm must exist by the time a ready
        # verdict arms it (its actions start disabled).
        self.operations = Operations(
            self,
            "Operations",
            telemetry=infra.telemetry,
            capacity=infra.capacity,
            burn_in_dtype=config.burn_in.dtype,
            file_system_id=infra.storage.file_system_id,
            file_system_capacity_gib=config.fsx.storage_capacity_gib,
            alarm_topic=infra.alerts.topic,
            other_nodes=infra.orchestrator.other_nodes,
        )
