"""TrnClusterStack: network, storage and capacity wiring for one Trainium cluster."""

from __future__ import annotations

from aws_cdk import CfnOutput, Environment, Stack, Tags
from constructs import Construct

from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import ClusterConfig
from trn_constructs.network import Network
from trn_constructs.storage import SharedFileSystem


class TrnClusterStack(Stack):
    """One Trainium cluster. Attributes: ``network``, ``capacity``, ``storage``."""

    def __init__(self, scope: Construct, construct_id: str, *, config: ClusterConfig) -> None:
        # Read by the availability_zones override, which CDK may call during construction.
        self._availability_zones = list(config.network.availability_zones)
        super().__init__(
            scope,
            construct_id,
            env=Environment(account=config.account, region=config.region),
            description=(
                f"Trainium cluster: {config.capacity.instance_count} x "
                f"{config.capacity.instance.instance_type} ({config.orchestrator})"
            ),
        )
        for key, value in config.tags.items():
            Tags.of(self).add(key, value)

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
        self._add_outputs(config)

    @property
    def availability_zones(self) -> list[str]:
        """The configured AZs, so that no AZ lookup (an AWS call) happens at synth time."""
        return self._availability_zones

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
