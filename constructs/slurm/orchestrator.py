"""Slurm through AWS ParallelCluster's official CloudFormation custom resource."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

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
from constructs import Construct

from trn_constructs.burn_in import HEAD_NODE_BOOTSTRAP, BurnInArtifacts
from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import RETENTION_DAYS, ClusterConfig, SlurmConfig
from trn_constructs.findings import acknowledge, wildcard_finding
from trn_constructs.handover.plan import HandoverPlan
from trn_constructs.image import ImageVersions
from trn_constructs.network import Network
from trn_constructs.slurm.cluster_config import (
    CLUSTER_USER,
    PCLUSTER_VERSION,
    QUEUE_NAME,
    ClusterSpec,
    CustomAction,
    HeadNodeSpec,
    TrainiumQueueSpec,
    cluster_configuration,
)
from trn_constructs.slurm.neuron_install import neuron_install
from trn_constructs.storage import SharedFileSystem
from trn_constructs.timeline import SLURM_CLUSTER_TEST_JOB_MINUTES, Budgets

if TYPE_CHECKING:  # operations.telemetry imports this package for CustomAction
    from trn_constructs.operations.telemetry import NodeTelemetry

KEEP_QUARANTINED_NODES = Path(__file__).resolve().parent / "node" / "keep_quarantined_nodes.sh"
# SSM's shell has no HOME and no Slurm or Neuron tools on PATH; nccom-test calls srun, and srun
# hands this environment to neuron-bench on the compute nodes.
JOB_ENVIRONMENT = (
    "HOME=/root",
    "PATH=/opt/slurm/bin:/opt/aws/neuron/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
)

PROVIDER_TEMPLATE_URL = (
    "https://${AWS::Region}-aws-parallelcluster.s3.${AWS::Region}.${AWS::URLSuffix}"
    f"/parallelcluster/{PCLUSTER_VERSION}/templates/custom_resource/cluster.yaml"
)

class SlurmOrchestrator(Construct):
    """A ParallelCluster Slurm cluster: a head node and one queue of Trainium nodes in the block.

    Every node boots ParallelCluster's official AMI, or the compute nodes the custom image in
    ``imageSsmParameter`` (made from that AMI, e.g. by TrnAmiStack). Compute nodes install the
    pinned Neuron stack when they start (only checking it on an image that has it); once
    ParallelCluster has configured them they start shipping metrics and the burn-in, which holds
    the node out of service until its verdict (burn_in/node/trn_burnin_bootstrap.py --slurm).

    Attributes:
        cluster_name: the ParallelCluster cluster name.
        provider: the nested stack of ParallelCluster's custom resource provider.
        cluster: the ``Custom::PclusterCluster`` resource.
        head_node_instance_id: the head node's EC2 instance id (deploy-time).
        partition: the Slurm partition of the Trainium nodes.
        other_nodes: nodes besides the Trainium ones the orchestrator counts (none).
    """

    other_nodes = 0

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: ClusterConfig,
        cluster_name: str,
        capacity: CapacityTarget,
        network: Network,
        storage: SharedFileSystem,
        artifacts: BurnInArtifacts,
        telemetry: "NodeTelemetry",
        cluster_test: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        slurm = config.slurm
        self.cluster_name = cluster_name
        self._artifacts = artifacts
        node_policy = iam.ManagedPolicy(
            self,
            "BurnInNodePolicy",
            description="Trainium nodes: read the burn-in package, write reports and metrics",
            statements=artifacts.node_statements(),
        )
        artifacts.acknowledge_node_policy(node_policy)
        compute_node_policies = (node_policy, telemetry.node_policy)
        head_node_policies: tuple[iam.ManagedPolicy, ...] = ()
        if cluster_test:
            # nccom-test's slurm mode runs from the head node (Neuron docs), and so the
            # handover's cluster all-reduce.
            cluster_test_policy = iam.ManagedPolicy(
                self,
                "ClusterTestHeadNodePolicy",
                description="Slurm head node: run the cluster all-reduce, write its result",
                statements=artifacts.head_node_statements(),
            )
            artifacts.acknowledge_head_node_policy(cluster_test_policy)
            head_node_policies = (cluster_test_policy,)

        self.provider = CfnStack(
            self,
            "Provider",
            template_url=Fn.sub(PROVIDER_TEMPLATE_URL),
            parameters=self._provider_parameters(slurm, (*head_node_policies, *compute_node_policies)) or None,
        )

        # Nothing may reach the head node's SSH port: this allow list stays empty (add a CIDR to
        # it to open SSH from there); people connect with Session Manager instead.
        ssh_sources = ec2.PrefixList(
            self, "SshAllowList", address_family=ec2.AddressFamily.IP_V4, max_entries=1
        )
        ssm_core = iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")
        # A custom compute image's id, read from SSM at deploy time so synthesis needs no AWS call.
        custom_ami = (
            CfnDynamicReference(CfnDynamicReferenceService.SSM, config.image_ssm_parameter).to_string()
            if config.image_ssm_parameter
            else None
        )
        versions = ImageVersions.load()
        neuron = neuron_install(versions)
        neuron_script = s3_assets.Asset(self, "NeuronInstallScript", path=str(neuron.path))
        keep_quarantined = s3_assets.Asset(self, "KeepQuarantinedNodes", path=str(KEEP_QUARANTINED_NODES))
        head_node_actions = (CustomAction(script=keep_quarantined.s3_object_url),)
        if cluster_test:
            # The cluster test's nccom-test runs here: the node's Neuron tools, no driver.
            head_node_neuron = neuron_install(versions, driver=False)
            head_node_actions += (CustomAction(script=neuron_script.s3_object_url, args=head_node_neuron.args),)
        budgets = Budgets("slurm", "kit" if config.image_ssm_parameter else "default",
                          config.burn_in.duration_seconds)
        spec = ClusterSpec(
            region=stack.region,
            head_node=HeadNodeSpec(
                instance_type=slurm.head_node_instance_type,
                subnet_id=network.compute_subnet.subnet_id,
                security_group_ids=(network.node_security_group.security_group_id,),
                ssh_allowed_sources=ssh_sources.prefix_list_id,
                policy_arns=(
                    ssm_core.managed_policy_arn,
                    *slurm.additional_policy_arns,
                    *(policy.managed_policy_arn for policy in head_node_policies),
                ),
                on_node_configured=head_node_actions,
                on_node_updated=head_node_actions,
                # /home, with the users' environments and compiler caches, is NFS from the head
                # node's root volume: it gets what a Trainium node gets (not the AMI's ~45 GiB).
                root_volume_gib=capacity.instance.root_volume_gib,
            ),
            queue=TrainiumQueueSpec(
                instance_type=capacity.instance_type,
                instance_count=capacity.instance_count,
                reservation_id=capacity.reservation_id,
                root_volume_gib=capacity.instance.root_volume_gib,
                subnet_id=network.compute_subnet.subnet_id,
                security_group_ids=(
                    network.node_security_group.security_group_id,
                    network.efa_security_group.security_group_id,
                ),
                ami=custom_ami,
                policy_arns=(
                    *slurm.additional_policy_arns,
                    *(policy.managed_policy_arn for policy in compute_node_policies),
                ),
                on_node_start=(
                    CustomAction(script=neuron_script.s3_object_url, args=neuron.args),
                ),
                on_node_configured=(
                    # First, so metrics flow during the burn-in; it never fails a node.
                    telemetry.node_action(),
                    CustomAction(
                        script=artifacts.bootstrap.s3_object_url,
                        args=tuple(artifacts.node_arguments(capacity, config.burn_in, slurm=True)),
                    ),
                ),
            ),
            file_system_id=storage.file_system_id,
            mount_dir=config.fsx.mount_dir,
            log_retention_days=RETENTION_DAYS[config.log_retention],
            tags=config.tags,
            head_node_bootstrap_seconds=budgets.head_node_bootstrap_minutes * 60,
            compute_node_bootstrap_seconds=budgets.compute_node_bootstrap_minutes * 60,
        )
        configuration = cluster_configuration(spec)
        self.cluster = CustomResource(
            self,
            "Cluster",
            service_token=self.provider.get_att("Outputs.ServiceToken").to_string(),
            resource_type="Custom::PclusterCluster",
            properties={"ClusterName": self.cluster_name, "ClusterConfiguration": configuration},
        )
        # Nodes bootstrap over the network's routes and endpoints and mount the file system
        # through its security group rules: all of them must exist first.
        self.cluster.node.add_dependency(network, storage)
        self.head_node_instance_id = self.cluster.get_att_string("headNode.instanceId")
        self.partition = QUEUE_NAME
        self._queue = stack.resolve(configuration["Scheduling"]["SlurmQueues"])
        self._add_outputs(stack.region)

    def handover_plan(self) -> HandoverPlan:
        """Replace a node by terminating its instance (clustermgtd relaunches the static node);
        everything inside Slurm (the cluster test, draining before the block ends) through one SSM
        command on the head node, found by ParallelCluster's tags."""
        stack = Stack.of(self)
        instances = stack.format_arn(service="ec2", resource="instance", resource_name="*")
        run_shell = stack.format_arn(service="ssm", account="", resource="document", resource_name="AWS-RunShellScript")
        tagged = {"parallelcluster:cluster-name": self.cluster_name}
        statements = (
            iam.PolicyStatement(
                actions=["ec2:TerminateInstances"], resources=[instances],
                conditions={"StringEquals": {
                    **{f"ec2:ResourceTag/{k}": v for k, v in tagged.items()},
                    "ec2:ResourceTag/parallelcluster:node-type": "Compute",
                }},
            ),
            iam.PolicyStatement(
                actions=["ssm:SendCommand"], resources=[instances],
                conditions={"StringEquals": {
                    **{f"ssm:resourceTag/{k}": v for k, v in tagged.items()},
                    "ssm:resourceTag/parallelcluster:node-type": "HeadNode",
                }},
            ),
            iam.PolicyStatement(actions=["ssm:SendCommand"], resources=[run_shell]),
            iam.PolicyStatement(actions=["ssm:GetCommandInvocation"], resources=["*"]),
        )  # fmt: skip
        findings = (
            (wildcard_finding(self, instances),
             "Instance ids change with every replacement; the conditions limit termination to this cluster's "
             "compute nodes and commands to its head node, by ParallelCluster's own tags"),
            ("AwsSolutions-IAM5[Resource::*]",
             "ssm:GetCommandInvocation has no resource-level permissions; the handover follows only the "
             "commands it sent"),
        )
        return HandoverPlan(
            orchestrator="slurm",
            settings={
                "cluster_name": self.cluster_name, "partition": self.partition,
                "job_minutes": SLURM_CLUSTER_TEST_JOB_MINUTES, "job_environment": list(JOB_ENVIRONMENT),
                "region": stack.region, "package": self._artifacts.package.s3_object_url,
                "bootstrap_source": self._artifacts.bootstrap.s3_object_url, "bootstrap_path": HEAD_NODE_BOOTSTRAP,
            },
            statements=statements,
            findings=findings,
            node_fingerprint=hashlib.sha256(json.dumps(self._queue, sort_keys=True).encode()).hexdigest()[:16],
        )

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
                        f" --region {region} --document-name AWS-StartInteractiveCommand "
                        f'--parameters command="sudo su - {CLUSTER_USER}"',
                    ],
                ),
                f"Shell on the head node as {CLUSTER_USER} through Session Manager (no SSH port "
                f"is open); jobs submitted as {CLUSTER_USER} run on the compute nodes, which have "
                "no ssm-user",
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
