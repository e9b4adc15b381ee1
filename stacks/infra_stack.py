"""The cluster's infrastructure: everything a failed handover must never touch.

Alerts, the Capacity Block (held or bought) and its end notices, network, storage, the burn-in as
nodes get it, node telemetry and the orchestrator with its Trainium nodes. TrnClusterStack (the
handover and operations) depends on this stack, so `cdk deploy TrnClusterStack` deploys both, and
a handover that fails rolls back only TrnClusterStack.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy
from constructs import Construct

from stacks.base import KitStack
from trn_constructs.alerts import Alerts
from trn_constructs.burn_in import BurnInArtifacts
from trn_constructs.capacity import CapacityTarget
from trn_constructs.capacity_expiry import CapacityExpiryWarnings
from trn_constructs.capacity_purchase.construct import CapacityBlockPurchase
from trn_constructs.config import ClusterConfig
from trn_constructs.handover import ClusterTestPlan, cluster_test_plan
from trn_constructs.network import Network
from trn_constructs.operations import NodeTelemetry
from trn_constructs.orchestrators import ORCHESTRATORS
from trn_constructs.storage import SharedFileSystem

DRY_RUN_NOTE = (
    "DRY RUN: this deployment buys nothing and holds no cluster (no network, storage, "
    "orchestrator or burn-in). CapacityPurchaseSummary names the offering the kit would buy, or "
    "the block this stack already holds; set capacityPurchaseConfirm=true and deploy again to buy "
    "it (irreversible) and build the cluster"
)


def infra_stack_name(cluster_stack_name: str) -> str:
    return f"{cluster_stack_name}Infra"


class TrnClusterInfraStack(KitStack):
    """Attributes: ``alerts``, ``capacity_purchase`` (None unless the kit buys the block), and,
    unless ``purchase_only`` (a purchase dry run: no block to launch into), ``capacity``,
    ``expiry``, ``network``, ``storage``, ``burn_in``, ``telemetry``, ``cluster_test``,
    ``cluster_name`` and ``orchestrator``."""

    def __init__(self, scope: Construct, construct_id: str, *, config: ClusterConfig, cluster_stack_name: str) -> None:
        purchase = config.capacity_purchase
        self.purchase_only = purchase is not None and not purchase.confirm
        super().__init__(
            scope,
            construct_id,
            config=config,
            description=(
                f"Trainium cluster infrastructure: {config.capacity.instance_count} x "
                f"{config.capacity.instance.instance_type} ({config.orchestrator})"
                + (" - no cluster yet: Capacity Block purchase only" if self.purchase_only else "")
            ),
        )
        self.alerts = Alerts(self, "Alerts", email=config.alert_email)
        self.capacity_purchase = None
        if purchase is not None:
            # Never rename or move: the id is part of what ties a bought block to this stack.
            self.capacity_purchase = CapacityBlockPurchase(
                self,
                "CapacityPurchase",
                purchase=purchase,
                capacity=config.capacity,
                availability_zone=config.network.availability_zone,
                tags=config.tags,
                log_retention=config.log_retention,
            )
        if self.purchase_only:
            self._add_outputs(self._capacity_outputs(DRY_RUN_NOTE))
            return
        self.capacity = (
            self.capacity_purchase.target
            if self.capacity_purchase
            else CapacityTarget.existing(config.capacity, config.network.availability_zone)
        )
        self.expiry = CapacityExpiryWarnings(
            self,
            "CapacityExpiry",
            reservation_id=self.capacity.reservation_id,
            topic=self.alerts.topic,
            key=self.alerts.key,
            notice_hours=config.capacity_end_notice_hours,
            log_retention=config.log_retention,
        )
        self.network = Network(self, "Network", config=config.network, log_retention=config.log_retention)
        self.storage = SharedFileSystem(
            self,
            "Storage",
            config=config.fsx,
            vpc=self.network.vpc,
            subnet=self.network.compute_subnet,
            client_security_group=self.network.node_security_group,
            efa_security_group=self.network.efa_security_group,
        )
        if self.storage.removal_policy == RemovalPolicy.RETAIN:
            self.network.retain_on_delete(*self.storage.interface_security_groups)
        construct_name, orchestrator, naming = ORCHESTRATORS[config.orchestrator]
        # Node metrics carry the name of the cluster to come; they land in log groups this stack owns.
        self.cluster_name = naming(cluster_stack_name)
        self.burn_in = BurnInArtifacts(self, "BurnIn", cluster_name=self.cluster_name)
        self.telemetry = NodeTelemetry(
            self,
            "Telemetry",
            cluster_name=self.cluster_name,
            orchestrator=config.orchestrator,
            log_retention=config.log_retention,
        )
        self.cluster_test: ClusterTestPlan = cluster_test_plan(config, self.capacity, self.burn_in)
        self.orchestrator = orchestrator(
            self,
            construct_name,
            config=config,
            cluster_name=self.cluster_name,
            capacity=self.capacity,
            network=self.network,
            storage=self.storage,
            artifacts=self.burn_in,
            telemetry=self.telemetry,
            cluster_test=self.cluster_test.runs,
        )
        self._add_outputs({**self._cluster_outputs(config), **self._capacity_outputs()})

    def _cluster_outputs(self, config: ClusterConfig) -> dict[str, tuple[str, str]]:
        return {
            "VpcId": (self.network.vpc.vpc_id, "VPC of the cluster"),
            "ComputeSubnetId": (
                self.network.compute_subnet.subnet_id,
                "Private subnet in the Capacity Block's AZ; every Trainium node and FSx live here",
            ),
            "NodeSecurityGroupId": (
                self.network.node_security_group.security_group_id,
                "Security group every cluster node joins",
            ),
            "EfaSecurityGroupId": (
                self.network.efa_security_group.security_group_id,
                "Security group for EFA interfaces (all traffic within the group only)",
            ),
            "CapacityReservationId": (self.capacity.reservation_id, "Capacity Block the Trainium nodes launch into"),
            "CapacityAvailabilityZone": (self.capacity.availability_zone, "Availability Zone of the Capacity Block"),
            "InstanceType": (self.capacity.instance_type, "Trainium instance type"),
            "InstanceCount": (str(self.capacity.instance_count), "Trainium instances in the cluster"),
            "FileSystemId": (self.storage.file_system_id, "FSx for Lustre file system id"),
            "FileSystemDnsName": (self.storage.dns_name, "FSx for Lustre DNS name"),
            "FileSystemMountName": (self.storage.mount_name, "FSx for Lustre mount name"),
            "FileSystemRemovalPolicy": (
                config.fsx.removal_policy,
                "What cdk destroy does with the file system and its data "
                "(retain: it stays, and is billed, until you delete it)",
            ),
        }

    def _capacity_outputs(self, cluster_note: str | None = None) -> dict[str, tuple[str, str]]:
        """Where alerts go, what the purchase did, when the block ends; ``cluster_note`` says why
        the stack holds no cluster (None: it does)."""
        outputs = {
            "AlertTopicArn": (
                self.alerts.topic.topic_arn,
                "SNS topic for the cluster's alerts (handover verdicts, alarms, Capacity Block end "
                "warnings); subscribe to it (e-mail, chat) to be told",
            ),
        }
        purchase = self.capacity_purchase
        if purchase:
            outputs["CapacityPurchaseSummary"] = (
                purchase.summary,
                "What the Capacity Block purchase bought, adopted or (dry run) would buy, and for how much",
            )
            outputs["CapacityPurchaseMode"] = (purchase.mode, "dry-run, purchased or adopted")
            outputs["CapacityBlockStartDate"] = (
                purchase.start_date,
                "Start (UTC) of the Capacity Block bought, adopted or (dry run) offered",
            )
        if purchase and not purchase.confirmed:
            outputs["CapacityBlockEndDate"] = (purchase.end_date, "End (UTC) of the offering a confirmed purchase would buy")
        else:
            outputs["CapacityBlockEndDate"] = (
                self.expiry.end_date,
                "End (UTC) of the Capacity Block; EC2 terminates its instances from 30 minutes before",
            )
            outputs["CapacityEndNoticeTime"] = (self.expiry.notice_time, "When (UTC) the alert topic gets the scheduled end notice")
        if cluster_note:
            outputs["ClusterNotDeployed"] = (cluster_note, "Why this stack holds no cluster yet")
        return outputs

    def _add_outputs(self, outputs: dict[str, tuple[str, str]]) -> None:
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)
