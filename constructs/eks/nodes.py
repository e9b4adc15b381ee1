"""Node groups of the EKS cluster: a small system group for add-ons and the Trainium group that runs
in the Capacity Block with every EFA interface attached."""

from __future__ import annotations

import hashlib
import json

from aws_cdk import CfnDynamicReference, CfnDynamicReferenceService, Fn, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from trn_constructs.capacity import CapacityTarget
from trn_constructs.eks.scheduling import (
    BURN_IN_TAINT_EFFECT,
    BURN_IN_TAINT_KEY,
    BURN_IN_TAINT_VALUE,
    trainium_node_labels,
)
from trn_constructs.findings import (
    BASIC_EXECUTION,
    CLOUDFORMATION_INVOKED,
    acknowledge,
    acknowledge_deploy_time_function,
    managed_policy_finding,
)
from trn_constructs.log_groups import log_group
from trn_constructs.network import Network

# Fixed, so the handover's permissions can name it before the node group exists.
TRAINIUM_NODEGROUP_NAME = "trainium"
SYSTEM_ROOT_VOLUME_GIB = 100  # Trainium nodes take theirs from the catalog (root_volume_gib)
ROOT_DEVICE_NAME = "/dev/xvda"  # AL2023 EKS AMIs
# IMDSv2 only, and one hop: only what runs in the node's own network namespace reaches instance
# metadata (and with it the node role's credentials), not pods one hop behind it. Nothing the kit
# installs needs more: the add-ons that read metadata run with hostNetwork (VPC CNI, kube-proxy,
# Pod Identity agent, EFA device plugin, CloudWatch agent, Fluent Bit); the FSx CSI node driver
# falls back to the Kubernetes API for its instance's data; every kit pod gets credentials through
# Pod Identity, and the burn-in takes its instance id from its Node (spec.providerID).
IMDS_HOP_LIMIT = 1

NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)


def _metadata_options() -> ec2.CfnLaunchTemplate.MetadataOptionsProperty:
    return ec2.CfnLaunchTemplate.MetadataOptionsProperty(
        http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=IMDS_HOP_LIMIT
    )


def _root_volume(size_gib: int) -> ec2.CfnLaunchTemplate.BlockDeviceMappingProperty:
    return ec2.CfnLaunchTemplate.BlockDeviceMappingProperty(
        device_name=ROOT_DEVICE_NAME,
        ebs=ec2.CfnLaunchTemplate.EbsProperty(
            volume_size=size_gib, volume_type="gp3", encrypted=True, delete_on_termination=True
        ),
    )


# DescribeCluster's path to the Kubernetes service CIDR (CloudFormation exposes only the IPv6 one).
SERVICE_CIDR_PATH = "cluster.kubernetesNetworkConfig.serviceIpv4Cidr"
USER_DATA_BOUNDARY = "TRNKIT"
# The id aws-cdk-lib gives the function behind every AwsCustomResource of a stack.
AWS_CUSTOM_RESOURCE_SINGLETON = "AWS679f53fac002430cb0da5b7982bd2287"


def _node_config_user_data(
    *,
    cluster_name: str,
    endpoint: str,
    certificate_authority: str,
    service_cidr: str,
    labels: dict[str, str],
    taint: str,
) -> str:
    """MIME multi-part user data with the nodeadm NodeConfig that joins an AL2023 node to the
    cluster. EKS adds its own bootstrap only to its AMI types, so a custom image needs this. The
    node registers with its labels and the burn-in taint: EKS applies a node group's taints only
    after the node has joined, and nothing may schedule on it before the burn-in."""
    node_labels = ",".join(f"{key}={value}" for key, value in labels.items())
    return "\n".join(
        [
            "MIME-Version: 1.0",
            f'Content-Type: multipart/mixed; boundary="{USER_DATA_BOUNDARY}"',
            "",
            f"--{USER_DATA_BOUNDARY}",
            "Content-Type: application/node.eks.aws",
            "",
            "apiVersion: node.eks.aws/v1alpha1",
            "kind: NodeConfig",
            "spec:",
            "  cluster:",
            f"    name: {cluster_name}",
            f"    apiServerEndpoint: {endpoint}",
            f"    certificateAuthority: {certificate_authority}",
            f"    cidr: {service_cidr}",
            "  kubelet:",
            "    flags:",
            f"      - --node-labels={node_labels}",
            f"      - --register-with-taints={taint}",
            "",
            f"--{USER_DATA_BOUNDARY}--",
            "",
        ]
    )


def _spec(template: ec2.CfnLaunchTemplate) -> eks.LaunchTemplateSpec:
    return eks.LaunchTemplateSpec(id=template.ref, version=template.attr_latest_version_number)


class ClusterNodes(Construct):
    """The cluster's two managed node groups and the IAM role their nodes share.

    Launch templates are L1: the L2 ``LaunchTemplate`` has no per-network-card interfaces, no
    capacity-block market type and no capacity reservation target, all of which Trainium needs.
    A launch template that names security groups replaces the ones EKS would attach, so both
    templates add the cluster security group (control plane <-> kubelet) to the kit's node group.
    Trainium nodes run the EKS Neuron AMI type, or with ``image_ssm_parameter`` the image whose id
    that parameter holds (e.g. TrnAmiStack's, built from the EKS Neuron AMI), bootstrapped by the
    launch template's user data. System nodes always run the standard EKS AMI type.

    Attributes:
        role: the node IAM role.
        system_nodegroup, trainium_nodegroup: the managed node groups.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        network: Network,
        capacity: CapacityTarget,
        system_instance_type: str,
        system_node_count: int,
        log_retention: logs.RetentionDays,
        image_ssm_parameter: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "NodeRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="EKS nodes: join the cluster, pod networking, image pulls, Session Manager",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(name) for name in NODE_MANAGED_POLICIES
            ],
        )
        for name in NODE_MANAGED_POLICIES:
            acknowledge(
                self.role,
                managed_policy_finding(name),
                "The AWS managed EKS node policies (worker node, VPC CNI, ECR pull-only, SSM core) "
                "are the documented minimum for managed node groups and follow EKS API changes",
            )
        base_groups = [
            network.node_security_group.security_group_id,
            cluster.cluster_security_group_id,
        ]
        self.system_nodegroup = self._system_nodegroup(
            cluster, network, base_groups, system_instance_type, system_node_count
        )
        image = (
            self._custom_image(cluster, capacity, image_ssm_parameter, log_retention)
            if image_ssm_parameter
            else None
        )
        self.trainium_nodegroup = self._trainium_nodegroup(
            cluster,
            network,
            capacity,
            base_groups + [network.efa_security_group.security_group_id],
            image,
        )

    def _system_nodegroup(
        self,
        cluster: eks.Cluster,
        network: Network,
        security_groups: list[str],
        instance_type: str,
        count: int,
    ) -> eks.Nodegroup:
        template = ec2.CfnLaunchTemplate(
            self,
            "SystemLaunchTemplate",
            launch_template_data=ec2.CfnLaunchTemplate.LaunchTemplateDataProperty(
                security_group_ids=security_groups,
                metadata_options=_metadata_options(),
                block_device_mappings=[_root_volume(SYSTEM_ROOT_VOLUME_GIB)],
            ),
        )
        return cluster.add_nodegroup_capacity(
            "SystemNodes",
            instance_types=[ec2.InstanceType(instance_type)],
            ami_type=eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
            launch_template_spec=_spec(template),
            min_size=count,
            max_size=count,
            desired_size=count,
            subnets=ec2.SubnetSelection(subnets=network.cluster_subnets),
            node_role=self.role,
            enable_node_auto_repair=True,
            labels={"trn-kit/role": "system"},
        )

    def _custom_image(
        self,
        cluster: eks.Cluster,
        capacity: CapacityTarget,
        ssm_parameter: str,
        log_retention: logs.RetentionDays,
    ) -> tuple[str, str]:
        """The image id in ``ssm_parameter`` (read when the stack deploys, so synthesis needs no
        AWS call) and base64 user data that joins a node of it to the cluster."""
        # One API call whose answer needs no code: an AwsCustomResource rather than a Lambda.
        lookup = cr.AwsCustomResource(
            self,
            "ServiceCidrLookup",
            on_update=cr.AwsSdkCall(
                service="EKS",
                action="describeCluster",
                parameters={"name": cluster.cluster_name},
                physical_resource_id=cr.PhysicalResourceId.of(cluster.cluster_name),
                output_paths=[SERVICE_CIDR_PATH],
            ),
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=[cluster.cluster_arn]),
            install_latest_aws_sdk=False,
            log_group=log_group(self, "ServiceCidrLookupLogs", retention=log_retention),
        )
        # The function is the stack-wide singleton aws-cdk-lib creates for AwsCustomResource.
        singleton = Stack.of(self).node.find_child(AWS_CUSTOM_RESOURCE_SINGLETON)
        acknowledge(
            singleton,
            managed_policy_finding(BASIC_EXECUTION),
            "aws-cdk-lib's AwsCustomResource function only writes its own logs with the basic "
            "execution policy; its one call is granted separately, on this cluster only",
        )
        acknowledge_deploy_time_function(singleton, CLOUDFORMATION_INVOKED)
        user_data = _node_config_user_data(
            cluster_name=cluster.cluster_name,
            endpoint=cluster.cluster_endpoint,
            certificate_authority=cluster.cluster_certificate_authority_data,
            service_cidr=lookup.get_response_field(SERVICE_CIDR_PATH),
            labels=trainium_node_labels(capacity.instance),
            taint=f"{BURN_IN_TAINT_KEY}={BURN_IN_TAINT_VALUE}:{BURN_IN_TAINT_EFFECT}",
        )
        image_id = CfnDynamicReference(CfnDynamicReferenceService.SSM, ssm_parameter).to_string()
        return image_id, Fn.base64(user_data)

    def _trainium_nodegroup(
        self,
        cluster: eks.Cluster,
        network: Network,
        capacity: CapacityTarget,
        security_groups: list[str],
        image: tuple[str, str] | None,
    ) -> eks.Nodegroup:
        """``image``: a custom image's id and the user data that bootstraps it; None: the EKS
        Neuron AMI type, which EKS bootstraps itself."""
        instance = capacity.instance
        interfaces = [
            ec2.CfnLaunchTemplate.NetworkInterfaceProperty(
                network_card_index=efa.network_card_index,
                device_index=efa.device_index,
                interface_type=efa.interface_type,
                groups=security_groups,
                delete_on_termination=True,
            )
            for efa in instance.efa_interfaces()
        ]
        template = ec2.CfnLaunchTemplate(
            self,
            "TrainiumLaunchTemplate",
            launch_template_data=ec2.CfnLaunchTemplate.LaunchTemplateDataProperty(
                # With a Capacity Block the instance type lives in the launch template, not in
                # the node group (EKS "managed node groups with Capacity Blocks for ML").
                instance_type=instance.instance_type,
                instance_market_options=ec2.CfnLaunchTemplate.InstanceMarketOptionsProperty(
                    market_type="capacity-block"
                ),
                capacity_reservation_specification=ec2.CfnLaunchTemplate.CapacityReservationSpecificationProperty(
                    capacity_reservation_target=ec2.CfnLaunchTemplate.CapacityReservationTargetProperty(
                        capacity_reservation_id=capacity.reservation_id
                    )
                ),
                network_interfaces=interfaces,
                metadata_options=_metadata_options(),
                block_device_mappings=[_root_volume(instance.root_volume_gib)],
                image_id=image[0] if image else None,
                user_data=image[1] if image else None,
            ),
        )
        if "instance_type" in instance.uncertain:
            # cfn-lint's instance-type enum cannot know an unpublished Trainium name; the catalog
            # marks it uncertain and configuration may correct it. Only this resource is exempt.
            template.add_metadata("cfn-lint", {"config": {"ignore_checks": ["E3628"]}})
        self.trainium_fingerprint = hashlib.sha256(
            json.dumps(Stack.of(self).resolve(template.launch_template_data), sort_keys=True).encode()
        ).hexdigest()[:16]
        nodegroup = cluster.add_nodegroup_capacity(
            "TrainiumNodes",
            nodegroup_name=TRAINIUM_NODEGROUP_NAME,
            capacity_type=eks.CapacityType.CAPACITY_BLOCK,
            # A launch template with its own image takes no AMI type (EKS rejects both).
            ami_type=None if image else eks.NodegroupAmiType.AL2023_X86_64_NEURON,
            launch_template_spec=_spec(template),
            # Created at 0: the block may not have started, and EKS scales the group to 0 before
            # every block's end. The handover scales its Auto Scaling group to every reserved
            # instance when it starts (handler/kubernetes.py); nothing else scales it.
            min_size=0,
            max_size=capacity.instance_count,
            desired_size=0,
            # A full block has no spare slot for a new node before an old one goes: an update
            # terminates the nodes first (MINIMAL), all at once, so it costs one slot cleanup and
            # boot rather than one per node; every new node burns in before it takes work.
            max_unavailable_percentage=100,
            # EFA OS-bypass works inside one subnet only, and the block exists in one AZ.
            subnets=ec2.SubnetSelection(subnets=[network.compute_subnet]),
            node_role=self.role,
            enable_node_auto_repair=True,
            labels=trainium_node_labels(instance),
            taints=[
                eks.TaintSpec(
                    key=BURN_IN_TAINT_KEY,
                    value=BURN_IN_TAINT_VALUE,
                    effect=eks.TaintEffect.NO_SCHEDULE,
                )
            ],
        )
        # aws-cdk-lib has no property for the update strategy yet.
        nodegroup.node.default_child.add_property_override("UpdateConfig.UpdateStrategy", "MINIMAL")
        return nodegroup
