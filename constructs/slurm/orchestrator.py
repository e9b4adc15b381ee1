"""Slurm through AWS ParallelCluster's official CloudFormation custom resource."""

from __future__ import annotations

from typing import Mapping

from aws_cdk import (
    CfnDynamicReference,
    CfnDynamicReferenceService,
    CfnOutput,
    CfnStack,
    CustomResource,
    Fn,
    Stack,
)
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk.aws_logs import RetentionDays
from constructs import Construct

from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import RETENTION_DAYS, SlurmConfig
from trn_constructs.findings import acknowledge, wildcard_finding
from trn_constructs.image import ImageVersions
from trn_constructs.network import Network
from trn_constructs.slurm.cluster_config import (
    PCLUSTER_VERSION,
    QUEUE_NAME,
    ClusterSpec,
    CustomAction,
    HeadNodeSpec,
    TrainiumQueueSpec,
    cluster_configuration,
    cluster_name,
)
from trn_constructs.slurm.neuron_install import neuron_install
from trn_constructs.storage import SharedFileSystem

PROVIDER_TEMPLATE_URL = (
    "https://${AWS::Region}-aws-parallelcluster.s3.${AWS::Region}.${AWS::URLSuffix}"
    f"/parallelcluster/{PCLUSTER_VERSION}/templates/custom_resource/cluster.yaml"
)

class SlurmOrchestrator(Construct):
    """A ParallelCluster Slurm cluster: a head node and one queue of Trainium nodes in the block.

    Every node boots ParallelCluster's official AMI, or the compute nodes the custom image in
    ``image_ssm_parameter`` (made from that AMI, e.g. by TrnAmiStack). Compute nodes install the
    pinned Neuron stack when they start (only checking it on an image that has it), then run
    ``compute_node_actions``, in order, once ParallelCluster has configured them.

    Attributes:
        cluster_name: the ParallelCluster cluster name.
        provider: the nested stack of ParallelCluster's custom resource provider.
        cluster: the ``Custom::PclusterCluster`` resource.
        head_node_instance_id: the head node's EC2 instance id (deploy-time).
        partition: the Slurm partition of the Trainium nodes.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SlurmConfig,
        capacity: CapacityTarget,
        network: Network,
        storage: SharedFileSystem,
        mount_dir: str,
        log_retention: RetentionDays,
        tags: Mapping[str, str],
        image_ssm_parameter: str | None = None,
        compute_node_actions: tuple[CustomAction, ...] = (),
        compute_node_policies: tuple[iam.IManagedPolicy, ...] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.cluster_name = cluster_name(stack.stack_name)

        self.provider = CfnStack(
            self,
            "Provider",
            template_url=Fn.sub(PROVIDER_TEMPLATE_URL),
            parameters=self._provider_parameters(config, compute_node_policies) or None,
        )

        # Nothing may reach the head node's SSH port: this allow list stays empty (add a CIDR to
        # it to open SSH from there); people connect with Session Manager instead.
        ssh_sources = ec2.PrefixList(
            self, "SshAllowList", address_family=ec2.AddressFamily.IP_V4, max_entries=1
        )
        ssm_core = iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")
        # A custom compute image's id, read from SSM at deploy time so synthesis needs no AWS call.
        custom_ami = (
            CfnDynamicReference(CfnDynamicReferenceService.SSM, image_ssm_parameter).to_string()
            if image_ssm_parameter
            else None
        )
        neuron = neuron_install(ImageVersions.load())
        neuron_script = s3_assets.Asset(self, "NeuronInstallScript", path=str(neuron.path))
        spec = ClusterSpec(
            region=stack.region,
            head_node=HeadNodeSpec(
                instance_type=config.head_node_instance_type,
                subnet_id=network.compute_subnet.subnet_id,
                security_group_ids=(network.node_security_group.security_group_id,),
                ssh_allowed_sources=ssh_sources.prefix_list_id,
                policy_arns=(ssm_core.managed_policy_arn, *config.additional_policy_arns),
            ),
            queue=TrainiumQueueSpec(
                instance_type=capacity.instance_type,
                instance_count=capacity.instance_count,
                reservation_id=capacity.reservation_id,
                subnet_id=network.compute_subnet.subnet_id,
                security_group_ids=(
                    network.node_security_group.security_group_id,
                    network.efa_security_group.security_group_id,
                ),
                ami=custom_ami,
                policy_arns=(
                    *config.additional_policy_arns,
                    *(policy.managed_policy_arn for policy in compute_node_policies),
                ),
                on_node_start=(
                    CustomAction(script=neuron_script.s3_object_url, args=neuron.args),
                ),
                on_node_configured=compute_node_actions,
            ),
            file_system_id=storage.file_system_id,
            mount_dir=mount_dir,
            log_retention_days=RETENTION_DAYS[log_retention],
            tags=tags,
        )
        self.cluster = CustomResource(
            self,
            "Cluster",
            service_token=self.provider.get_att("Outputs.ServiceToken").to_string(),
            resource_type="Custom::PclusterCluster",
            properties={
                "ClusterName": self.cluster_name,
                "ClusterConfiguration": cluster_configuration(spec),
            },
        )
        # Nodes bootstrap over the network's routes and endpoints and mount the file system
        # through its security group rules: all of them must exist first.
        self.cluster.node.add_dependency(network, storage)
        self.head_node_instance_id = self.cluster.get_att_string("headNode.instanceId")
        self.partition = QUEUE_NAME
        self._add_outputs(stack.region)

    def _provider_parameters(
        self, config: SlurmConfig, kit_policies: tuple[iam.IManagedPolicy, ...]
    ) -> dict[str, str]:
        if config.provider_lambda_role_arn:
            # The template ignores AdditionalIamPolicies with a custom role: the role's owner
            # grants whatever the provider needs, including attaching the node policies.
            return {"CustomLambdaRole": config.provider_lambda_role_arn}
        node_policy_arns = [
            *config.additional_policy_arns, *(p.managed_policy_arn for p in kit_policies)
        ]
        if not node_policy_arns:
            return {}
        # The provider's default role may attach only a fixed list of policies to the node roles
        # ParallelCluster creates (under /parallelcluster/); this lets it attach the user's too.
        node_roles = Stack.of(self).format_arn(
            service="iam", region="", resource="role", resource_name="parallelcluster/*"
        )
        attach = iam.ManagedPolicy(
            self,
            "ProviderAttachNodePolicies",
            description="Lets ParallelCluster's provider attach the configured node policies",
            statements=[
                iam.PolicyStatement(
                    actions=["iam:AttachRolePolicy", "iam:DetachRolePolicy"],
                    resources=[node_roles],
                    conditions={"ArnEquals": {"iam:PolicyARN": node_policy_arns}},
                )
            ],
        )
        acknowledge(
            attach,
            wildcard_finding(self, node_roles),
            "ParallelCluster names node roles at deploy time under the /parallelcluster/ path; "
            "the condition limits the grant to the configured policy ARNs",
        )
        return {"AdditionalIamPolicies": attach.managed_policy_arn}

    def _add_outputs(self, region: str) -> None:
        outputs = {
            "SlurmClusterName": (
                self.cluster_name,
                "ParallelCluster cluster name (for pcluster commands)",
            ),
            "SlurmHeadNodeInstanceId": (
                self.head_node_instance_id,
                "Slurm head node EC2 instance id",
            ),
            "SlurmConnectCommand": (
                Fn.join(
                    "",
                    [
                        "aws ssm start-session --target ",
                        self.head_node_instance_id,
                        f" --region {region}",
                    ],
                ),
                "Shell on the head node through Session Manager (no SSH port is open)",
            ),
            "SlurmNodeLogGroupPrefix": (
                f"/aws/parallelcluster/{self.cluster_name}",
                "CloudWatch Logs of the cluster's nodes: the log group is this name plus the "
                "creation timestamp ParallelCluster appends",
            ),
            "SlurmProviderLogGroupArn": (
                self.provider.get_att("Outputs.LogGroupArn").to_string(),
                "Logs of ParallelCluster's provider function: why a cluster create, update or "
                "delete failed",
            ),
        }
        for name, (value, description) in outputs.items():
            output = CfnOutput(self, name, value=value, description=description)
            output.override_logical_id(name)
