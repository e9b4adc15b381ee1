"""TrnClusterStack: network, storage and capacity wiring for one Trainium cluster."""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.base import KitStack
from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import ClusterConfig
from trn_constructs.eks import EksOrchestrator
from trn_constructs.network import Network
from trn_constructs.operations import NodeTelemetry, Operations
from trn_constructs.slurm import SlurmOrchestrator
from trn_constructs.slurm.cluster_config import CustomAction
from trn_constructs.slurm.cluster_config import cluster_name as slurm_cluster_name
from trn_constructs.storage import SharedFileSystem
from trn_constructs.validation import BurnInArtifacts, HandoverGate
from trn_constructs.validation.eks import EksBurnIn


class TrnClusterStack(KitStack):
    """One Trainium cluster. Attributes: ``network``, ``capacity``, ``storage``, ``orchestrator``."""

    def __init__(self, scope: Construct, construct_id: str, *, config: ClusterConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            config=config,
            description=(
                f"Trainium cluster: {config.capacity.instance_count} x "
                f"{config.capacity.instance.instance_type} ({config.orchestrator})"
            ),
        )

        self.network = Network(
            self,
            "Network",
            config=config.network,
            log_retention=config.log_retention,
        )
        self.capacity = CapacityTarget.existing(
            config.capacity, config.network.availability_zone
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
        self.burn_in = BurnInArtifacts(self, "BurnIn")
        # Node metrics land in log groups the stack owns (EKS names its cluster after the stack).
        self.telemetry = NodeTelemetry(
            self,
            "Telemetry",
            cluster_name=(
                self.stack_name
                if config.orchestrator == "eks"
                else slurm_cluster_name(self.stack_name)
            ),
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
        )
        self.operations = Operations(
            self,
            "Operations",
            telemetry=self.telemetry,
            capacity=self.capacity,
            burn_in_dtype=config.burn_in.dtype,
            file_system_id=self.storage.file_system_id,
            file_system_capacity_gib=config.fsx.storage_capacity_gib,
            alarm_topic=self._alarm_topic(),
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
        node_policy = iam.ManagedPolicy(
            self,
            "BurnInNodePolicy",
            description="Trainium nodes: read the burn-in package, write reports and metrics",
            statements=self.burn_in.node_statements(),
        )
        self.burn_in.acknowledge_node_policy(node_policy)
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
            # A node that fails the burn-in fails OnNodeConfigured, so Slurm never schedules on it.
            compute_node_action=CustomAction(
                script=self.burn_in.bootstrap.s3_object_url,
                args=tuple(self.burn_in.node_arguments(self.capacity, config.burn_in)),
            ),
            compute_node_policies=(node_policy,),
        )
        return self.orchestrator.cluster

    def _alarm_topic(self) -> sns.Topic:
        """The alarms' topic: KMS-encrypted and TLS-only; CloudWatch may use the key to publish."""
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description="Encrypts the cluster's alarm topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )
        topic = sns.Topic(self, "AlarmTopic", master_key=key, enforce_ssl=True)
        CfnOutput(
            self,
            "AlarmTopicArn",
            value=topic.topic_arn,
            description="SNS topic of the cluster's alarms: subscribe (email, chat) to be paged",
        )
        return topic

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
                "Handover: how many Trainium nodes passed the burn-in and the median chip "
                "throughput as a share of peak",
            ),
            "BurnInReports": (self.gate.report_location, "Per-node burn-in reports (JSON)"),
            "FileSystemRemovalPolicy": (
                config.fsx.removal_policy,
                "What cdk destroy does with the file system and its data "
                "(retain: it stays, and is billed, until you delete it)",
            ),
        }
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)
