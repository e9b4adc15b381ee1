"""Network: the VPC (built or imported), the compute subnet in the capacity's AZ, and the security
groups every cluster node joins."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from trn_constructs.config import NetworkConfig
from trn_constructs.findings import CLOUDFORMATION_INVOKED, acknowledge, acknowledge_deploy_time_function
from trn_constructs.log_groups import log_group, route_function_logs

# The stack-wide provider aws-cdk-lib adds for restrict_default_security_group.
RESTRICT_DEFAULT_SG_PROVIDER = "Custom::VpcRestrictDefaultSGCustomResourceProvider"
COMPUTE_SUBNET_GROUP = "Compute"
PUBLIC_SUBNET_GROUP = "Public"

# What nodes reach privately: Session Manager (no SSH), image pulls, logs, metrics, IAM roles.
INTERFACE_ENDPOINTS = {
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "SsmMessages": ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
    "Ec2Messages": ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
}


class Network(Construct):
    """A VPC with one compute subnet in the Capacity Block's AZ and the cluster's security groups.

    Attributes:
        vpc: the VPC.
        compute_subnet: private subnet in the capacity AZ; all Trainium nodes and FSx live here
            (EFA OS-bypass only works inside one subnet).
        cluster_subnets: the compute subnet and a private subnet in a second AZ (EKS needs two).
        node_security_group: every cluster node (head node, system and Trainium nodes).
        efa_security_group: all traffic to and from itself only, as EFA requires.
        endpoint_security_group: the interface endpoints; HTTPS from the nodes (None when the VPC
            is imported: its owner provides egress).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: NetworkConfig, log_retention: logs.RetentionDays
    ) -> None:
        super().__init__(scope, construct_id)
        self.imported = bool(config.vpc_id)
        self.vpc = (
            self._import_vpc(config) if self.imported else self._build_vpc(config, log_retention)
        )
        self.cluster_subnets = self.vpc.select_subnets(
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
        ).subnets
        self.compute_subnet = next(
            s for s in self.cluster_subnets if s.availability_zone == config.availability_zone
        )

        self.node_security_group = ec2.SecurityGroup(
            self,
            "NodeSecurityGroup",
            vpc=self.vpc,
            description="Trainium cluster nodes: egress to endpoints, NAT and FSx",
            allow_all_outbound=True,
        )
        self.efa_security_group = ec2.SecurityGroup(
            self,
            "EfaSecurityGroup",
            vpc=self.vpc,
            description="EFA: all traffic to and from members of this group only",
            allow_all_outbound=False,
        )
        self.efa_security_group.add_ingress_rule(
            self.efa_security_group, ec2.Port.all_traffic(), "EFA from group members"
        )
        self.efa_security_group.add_egress_rule(
            self.efa_security_group, ec2.Port.all_traffic(), "EFA to group members"
        )

        flow_log_group = log_group(self, "FlowLogs", retention=log_retention)
        ec2.FlowLog(
            self,
            "FlowLog",
            resource_type=ec2.FlowLogResourceType.from_vpc(self.vpc),
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        self.endpoint_security_group: ec2.SecurityGroup | None = None
        if not config.vpc_id:
            self._add_endpoints()

    def retain_on_delete(self, *security_groups: ec2.ISecurityGroup) -> None:
        """Keep the VPC, the compute subnet and ``security_groups`` when the stack is deleted.

        For a retained file system: its network interfaces stay in them, so CloudFormation could
        not delete them and the whole delete would end DELETE_FAILED. Everything else (NAT, the
        other subnets, endpoints, routes) still goes. An imported VPC and its subnets are not the
        stack's to delete; the groups are, so they are kept either way.
        """
        owned = () if self.imported else (self.vpc, self.compute_subnet)
        for resource in (*owned, *security_groups):
            resource.node.default_child.apply_removal_policy(RemovalPolicy.RETAIN)

    def _build_vpc(self, config: NetworkConfig, log_retention: logs.RetentionDays) -> ec2.Vpc:
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            availability_zones=list(config.availability_zones),
            # One NAT gateway, in the capacity AZ where the traffic is; the second AZ only hosts
            # control-plane interfaces.
            nat_gateways=1,
            nat_gateway_subnets=ec2.SubnetSelection(
                subnet_group_name=PUBLIC_SUBNET_GROUP,
                availability_zones=[config.availability_zone],
            ),
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name=PUBLIC_SUBNET_GROUP, subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                # /18: a Trainium node with the VPC CNI can hold hundreds of pod and EFA addresses.
                ec2.SubnetConfiguration(
                    name=COMPUTE_SUBNET_GROUP,
                    subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                    cidr_mask=18,
                ),
            ],
            restrict_default_security_group=True,
        )
        # Capacity Blocks exist in exactly one AZ, so the AZ is configuration, not a choice.
        acknowledge(
            vpc,
            "CloudFormation-Validate::W3010",
            "Subnets must sit in the Capacity Block's Availability Zone, named in config",
        )
        # The function that empties the default security group has no log group setting.
        handler = Stack.of(self).node.find_child(RESTRICT_DEFAULT_SG_PROVIDER).node.find_child("Handler")
        route_function_logs(handler, self, "RestrictDefaultSecurityGroupLogs", log_retention)
        acknowledge_deploy_time_function(handler, CLOUDFORMATION_INVOKED)
        return vpc

    def _import_vpc(self, config: NetworkConfig) -> ec2.IVpc:
        vpc = ec2.Vpc.from_vpc_attributes(
            self,
            "Vpc",
            vpc_id=config.vpc_id,
            availability_zones=list(config.availability_zones),
            private_subnet_ids=[config.compute_subnet_id, config.secondary_subnet_id],
        )
        acknowledge(
            vpc,
            "Construct-Annotations::@aws-cdk/aws-ec2:noSubnetRouteTableId",
            "An imported VPC's routing is its owner's; the kit adds no routes or gateway "
            "endpoints to it, so it never needs the route table ids",
        )
        return vpc

    def _add_endpoints(self) -> None:
        self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3
        )
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Interface endpoints: HTTPS from cluster nodes",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            self.node_security_group, ec2.Port.HTTPS, "HTTPS from cluster nodes"
        )
        for name, service in INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(
                name,
                service=service,
                # Endpoints cost per AZ-hour; the nodes that use them are all in the compute subnet.
                subnets=ec2.SubnetSelection(subnets=[self.compute_subnet]),
                security_groups=[self.endpoint_security_group],
                open=False,
                private_dns_enabled=True,
            )
