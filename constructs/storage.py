"""Storage: one FSx for Lustre PERSISTENT_2 file system in the compute subnet."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_fsx as fsx
from aws_cdk import aws_kms as kms
from constructs import Construct

from trn_constructs.config import FsxConfig

LUSTRE_PORTS = (ec2.Port.tcp(988), ec2.Port.tcp_range(1018, 1023))
LUSTRE_VERSION = "2.15"

_REMOVAL_POLICIES = {"retain": RemovalPolicy.RETAIN, "destroy": RemovalPolicy.DESTROY}


class SharedFileSystem(Construct):
    """FSx for Lustre for datasets and checkpoints, reachable only from the cluster's nodes.

    The L1 resource is used because the L2 ``LustreFileSystem`` has no metadata configuration and
    no EFA setting, both of which PERSISTENT_2 training file systems need.

    Attributes:
        file_system_id, dns_name, mount_name: what clients need to mount it.
        security_group: the file system's own group.
        interface_security_groups: every group its network interfaces are in.
        removal_policy: what ``cdk destroy`` does with the data.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: FsxConfig,
        vpc: ec2.IVpc,
        subnet: ec2.ISubnet,
        client_security_group: ec2.ISecurityGroup,
        efa_security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        self.removal_policy = _REMOVAL_POLICIES[config.removal_policy]

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="FSx for Lustre: Lustre ports from itself and cluster nodes only",
            allow_all_outbound=True,
        )
        for port in LUSTRE_PORTS:
            # Servers talk to each other, clients to servers and (LNet) servers back to clients.
            self.security_group.add_ingress_rule(self.security_group, port, "Lustre between servers")
            self.security_group.add_ingress_rule(client_security_group, port, "Lustre from nodes")
            client_security_group.connections.allow_from(
                self.security_group, port, "Lustre from the file system"
            )

        key = kms.Key(
            self,
            "Key",
            description="Encrypts the cluster's FSx for Lustre file system",
            enable_key_rotation=True,
            removal_policy=self.removal_policy,
        )
        security_groups = [self.security_group]
        if config.efa_enabled:
            # An EFA-enabled file system exchanges EFA traffic with the nodes directly.
            security_groups.append(efa_security_group)
        self.interface_security_groups = tuple(security_groups)

        metadata = fsx.CfnFileSystem.MetadataConfigurationProperty(
            mode=config.metadata_mode, iops=config.metadata_iops
        )
        self.file_system = fsx.CfnFileSystem(
            self,
            "FileSystem",
            file_system_type="LUSTRE",
            file_system_type_version=LUSTRE_VERSION,
            storage_type="SSD",
            storage_capacity=config.storage_capacity_gib,
            subnet_ids=[subnet.subnet_id],
            security_group_ids=[sg.security_group_id for sg in security_groups],
            kms_key_id=key.key_id,
            lustre_configuration=fsx.CfnFileSystem.LustreConfigurationProperty(
                deployment_type="PERSISTENT_2",
                per_unit_storage_throughput=config.throughput_mbps_per_tib,
                data_compression_type="LZ4",
                metadata_configuration=metadata,
                efa_enabled=config.efa_enabled or None,
            ),
        )
        self.file_system.apply_removal_policy(self.removal_policy)

        if config.s3_path:
            fsx.CfnDataRepositoryAssociation(
                self,
                "S3Link",
                file_system_id=self.file_system.ref,
                file_system_path=config.s3_file_system_path,
                data_repository_path=config.s3_path,
                batch_import_meta_data_on_create=True,
                s3=fsx.CfnDataRepositoryAssociation.S3Property(
                    auto_import_policy=fsx.CfnDataRepositoryAssociation.AutoImportPolicyProperty(
                        events=["NEW", "CHANGED", "DELETED"]
                    ),
                    auto_export_policy=fsx.CfnDataRepositoryAssociation.AutoExportPolicyProperty(
                        events=["NEW", "CHANGED", "DELETED"]
                    ),
                ),
            )

        self.file_system_id = self.file_system.ref
        self.dns_name = self.file_system.attr_dns_name
        self.mount_name = self.file_system.attr_lustre_mount_name
