"""TrnClusterStack: network, storage and capacity wiring for one Trainium cluster."""

from __future__ import annotations

from aws_cdk import CfnOutput
from constructs import Construct

from stacks.base import KitStack
from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import ClusterConfig
from trn_constructs.eks import EksOrchestrator
from trn_constructs.network import Network
from trn_constructs.slurm import SlurmOrchestrator
from trn_constructs.storage import SharedFileSystem


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
        if config.orchestrator == "slurm":
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
            )
        self._add_outputs(config)

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
            "FileSystemRemovalPolicy": (
                config.fsx.removal_policy,
                "What cdk destroy does with the file system and its data "
                "(retain: it stays, and is billed, until you delete it)",
            ),
        }
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)
