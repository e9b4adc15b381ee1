"""TrnClusterStack: network, storage and capacity wiring for one Trainium cluster."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, RemovalPolicy
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.base import KitStack
from trn_constructs.alerts import Alerts
from trn_constructs.capacity import CapacityTarget
from trn_constructs.capacity_expiry import CapacityExpiryWarnings
from trn_constructs.capacity_purchase import CapacityBlockPurchase
from trn_constructs.config import ClusterConfig
from trn_constructs.eks import EksOrchestrator
from trn_constructs.eks import cluster_name as eks_cluster_name
from trn_constructs.network import Network
from trn_constructs.operations import NodeTelemetry, Operations
from trn_constructs.slurm import SlurmOrchestrator
from trn_constructs.slurm.cluster_config import CustomAction
from trn_constructs.slurm.cluster_config import cluster_name as slurm_cluster_name
from trn_constructs.storage import SharedFileSystem
from trn_constructs.validation import BurnInArtifacts, HandoverGate, SlurmClusterTest
from trn_constructs.validation.eks import EksBurnIn, EksClusterTest, cluster_test_fingerprint

DRY_RUN_NOTE = (
    "DRY RUN: this deployment buys nothing and holds no cluster (no network, storage, "
    "orchestrator or burn-in). CapacityPurchaseSummary names the offering the kit would buy, or "
    "the block this stack already holds; set capacityPurchaseConfirm=true and deploy again to buy "
    "it (irreversible) and build the cluster"
)
PENDING_NOTE = (
    "The Capacity Block is bought (CapacityPurchaseSummary) but cannot have started at this "
    "deployment (capacityPurchaseEarliestStart is later), so no cluster was deployed: its nodes "
    "could not launch yet. Deploy again once the block has started (CapacityBlockStartDate)"
)


class TrnClusterStack(KitStack):
    """One Trainium cluster. Attributes: ``alerts``, ``capacity_purchase`` (None unless the kit
    buys the block), ``network``, ``capacity``, ``storage``, ``orchestrator``.

    A purchase dry run (capacityPurchase without capacityPurchaseConfirm) holds no block to launch
    into, so the stack then has only ``alerts`` and ``capacity_purchase``: it reports the offering.
    A confirmed purchase synthesized before capacityPurchaseEarliestStart buys a block that cannot
    have started, so the stack then stops after ``capacity`` and ``expiry``; the first deployment
    after the start builds the cluster.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: ClusterConfig) -> None:
        purchase = config.capacity_purchase
        no_cluster = purchase is not None and not (purchase.confirm and purchase.may_have_started)
        super().__init__(
            scope,
            construct_id,
            config=config,
            description=(
                f"Trainium cluster: {config.capacity.instance_count} x "
                f"{config.capacity.instance.instance_type} ({config.orchestrator})"
                + (" - no cluster yet: Capacity Block purchase only" if no_cluster else "")
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
            if not purchase.confirm:
                # DRY RUN: nothing is bought, so there is no block to launch into or warn about.
                self._add_output_table(self._capacity_outputs(DRY_RUN_NOTE))
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
        if no_cluster:
            # A confirmed block that cannot have started: its nodes could not launch yet, and the
            # burn-in gate would time out and roll back.
            self._add_output_table(self._capacity_outputs(PENDING_NOTE))
            return

        self.network = Network(
            self,
            "Network",
            config=config.network,
            log_retention=config.log_retention,
        )
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
        # Node metrics carry the name of the cluster to come; they land in log groups the stack owns.
        naming = eks_cluster_name if config.orchestrator == "eks" else slurm_cluster_name
        cluster_name = naming(self.stack_name)
        self.burn_in = BurnInArtifacts(self, "BurnIn", cluster_name=cluster_name)
        self.telemetry = NodeTelemetry(
            self,
            "Telemetry",
            cluster_name=cluster_name,
            orchestrator=config.orchestrator,
            log_retention=config.log_retention,
        )
        trainium_nodes = self._add_orchestrator(config)
        self.gate = HandoverGate(
            self,
            "HandoverGate",
            artifacts=self.burn_in,
            capacity=self.capacity,
            burn_in=config.burn_in,
            nodes=trainium_nodes,
            log_retention=config.log_retention,
            **self._cluster_test(config),
        )
        if config.orchestrator == "eks" and self._runs_cluster_test(config):
            cluster_test = EksClusterTest(
                self,
                "EksClusterTest",
                cluster=self.orchestrator.cluster,
                artifacts=self.burn_in,
                capacity=self.capacity,
                burn_in=config.burn_in,
                handover=self.gate.handover,
                after=[trainium_nodes],
            )
            self.gate.wait_for_cluster_test(cluster_test.job)
        self.operations = Operations(
            self,
            "Operations",
            telemetry=self.telemetry,
            capacity=self.capacity,
            burn_in_dtype=config.burn_in.dtype,
            file_system_id=self.storage.file_system_id,
            file_system_capacity_gib=config.fsx.storage_capacity_gib,
            alarm_topic=self.alerts.topic,
            other_nodes=config.eks.system_node_count if config.orchestrator == "eks" else 0,
        )
        # Alarms start watching once the nodes have passed the burn-in, not while they boot.
        self.operations.node.add_dependency(self.gate.node.default_child)
        self._add_outputs(config)

    def _add_orchestrator(self, config: ClusterConfig) -> Construct:
        """The configured orchestrator, with the burn-in wired into how it starts Trainium nodes;
        returns what the handover gate must wait for."""
        if config.orchestrator == "eks":
            self.orchestrator = EksOrchestrator(
                self,
                "Eks",
                config=config.eks,
                network=self.network,
                capacity=self.capacity,
                storage=self.storage,
                file_system_capacity_gib=config.fsx.storage_capacity_gib,
                log_retention=config.log_retention,
                image_ssm_parameter=config.image_ssm_parameter,
            )
            self.orchestrator.observability.node.add_dependency(self.telemetry)
            return EksBurnIn(
                self,
                "EksBurnIn",
                cluster=self.orchestrator.cluster,
                artifacts=self.burn_in,
                capacity=self.capacity,
                burn_in=config.burn_in,
                after=[
                    self.orchestrator.nodes.trainium_nodegroup,
                    self.orchestrator.pod_identity_agent,
                    *self.orchestrator.device_plugins,
                ],
            ).manifest
        cluster_test = self._runs_cluster_test(config)
        node_policy = iam.ManagedPolicy(
            self,
            "BurnInNodePolicy",
            description="Trainium nodes: read the burn-in package, write reports and metrics",
            statements=self.burn_in.node_statements(cluster_test=cluster_test),
        )
        self.burn_in.acknowledge_node_policy(node_policy, cluster_test=cluster_test)
        self.orchestrator = SlurmOrchestrator(
            self,
            "Slurm",
            config=config.slurm,
            capacity=self.capacity,
            network=self.network,
            storage=self.storage,
            mount_dir=config.fsx.mount_dir,
            log_retention=config.log_retention,
            tags=config.tags,
            image_ssm_parameter=config.image_ssm_parameter,
            compute_node_actions=(
                # First, so metrics flow during the burn-in; it never fails a node.
                self.telemetry.node_action(),
                # A node that fails the burn-in fails its configuration: Slurm never uses it.
                CustomAction(
                    script=self.burn_in.bootstrap.s3_object_url,
                    args=tuple(
                        self.burn_in.node_arguments(self.capacity, config.burn_in, slurm=True)
                    ),
                ),
            ),
            compute_node_policies=(node_policy, self.telemetry.node_policy),
        )
        return self.orchestrator.cluster

    def _cluster_test_skipped(self, config: ClusterConfig) -> str | None:
        """Why the gate's second stage cannot run here; None: it runs."""
        if not config.burn_in.cluster_test:
            return "clusterTest is false"
        if self.capacity.instance_count < 2:
            return "a single node has no inter-node path to test"
        return None

    def _runs_cluster_test(self, config: ClusterConfig) -> bool:
        return self._cluster_test_skipped(config) is None

    def _cluster_test(self, config: ClusterConfig) -> dict[str, Any]:
        """The gate's second stage where it can run, else the reason it does not. On EKS the
        stack applies the all-reduce's Job once the first stage has counted the passed nodes."""
        skipped = self._cluster_test_skipped(config)
        if skipped:
            return {"cluster_test_skipped": skipped}
        if config.orchestrator == "eks":
            return {"cluster_test_follows": cluster_test_fingerprint(
                self.burn_in, self.capacity, config.burn_in
            )}  # fmt: skip
        return {
            "cluster_test": SlurmClusterTest(
                head_node_instance_id=self.orchestrator.head_node_instance_id,
                partition=self.orchestrator.partition,
            )
        }

    def _add_outputs(self, config: ClusterConfig) -> None:
        outputs = {
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
            "CapacityReservationId": (
                self.capacity.reservation_id,
                "Capacity Block the Trainium nodes launch into",
            ),
            "CapacityAvailabilityZone": (
                self.capacity.availability_zone,
                "Availability Zone of the Capacity Block",
            ),
            "InstanceType": (self.capacity.instance_type, "Trainium instance type"),
            "InstanceCount": (
                str(self.capacity.instance_count),
                "Trainium instances in the cluster",
            ),
            "FileSystemId": (self.storage.file_system_id, "FSx for Lustre file system id"),
            "FileSystemDnsName": (self.storage.dns_name, "FSx for Lustre DNS name"),
            "FileSystemMountName": (self.storage.mount_name, "FSx for Lustre mount name"),
            "BurnInSummary": (
                self.gate.summary,
                "Handover: how many Trainium nodes passed the burn-in, the median chip "
                "throughput as a share of peak, and the cluster all-reduce's bus bandwidth",
            ),
            "BurnInReports": (self.gate.report_location, "Per-node burn-in reports (JSON)"),
            "FileSystemRemovalPolicy": (
                config.fsx.removal_policy,
                "What cdk destroy does with the file system and its data "
                "(retain: it stays, and is billed, until you delete it)",
            ),
        }
        self._add_output_table({**outputs, **self._capacity_outputs()})

    def _capacity_outputs(self, cluster_note: str | None = None) -> dict[str, tuple[str, str]]:
        """Where alerts go, what the purchase did, when the block ends; ``cluster_note`` says why
        the stack holds no cluster (None: it does)."""
        outputs = {
            "AlertTopicArn": (
                self.alerts.topic.topic_arn,
                "SNS topic for the cluster's alerts (alarms, Capacity Block end warnings); subscribe "
                "to it (e-mail, chat) to be told",
            ),
        }
        purchase = self.capacity_purchase
        if purchase:
            outputs["CapacityPurchaseSummary"] = (
                purchase.summary,
                "What the Capacity Block purchase bought, adopted or (dry run) would buy, and "
                "for how much",
            )
            outputs["CapacityPurchaseMode"] = (purchase.mode, "dry-run, purchased or adopted")
            outputs["CapacityBlockStartDate"] = (
                purchase.start_date,
                "Start (UTC) of the Capacity Block bought, adopted or (dry run) offered",
            )
        if purchase and not purchase.confirmed:
            outputs["CapacityBlockEndDate"] = (
                purchase.end_date,
                "End (UTC) of the offering a confirmed purchase would buy",
            )
        else:
            outputs["CapacityBlockEndDate"] = (
                self.expiry.end_date,
                "End (UTC) of the Capacity Block; EC2 terminates its instances from 30 minutes "
                "before",
            )
            outputs["CapacityEndNoticeTime"] = (
                self.expiry.notice_time,
                "When (UTC) the alert topic gets the scheduled end notice",
            )
        if cluster_note:
            outputs["ClusterNotDeployed"] = (cluster_note, "Why this stack holds no cluster yet")
            if purchase.confirmed:
                outputs["CapacityReservationId"] = (
                    self.capacity.reservation_id,
                    "The bought Capacity Block the cluster will launch into",
                )
        return outputs

    def _add_output_table(self, outputs: dict[str, tuple[str, str]]) -> None:
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)
