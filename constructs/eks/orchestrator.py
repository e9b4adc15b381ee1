"""EksOrchestrator: an EKS cluster whose Trainium nodes run in the Capacity Block, with the Neuron
and EFA device plugins, the FSx for Lustre CSI driver bound to the stack's file system, and
Container Insights."""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk.lambda_layer_kubectl_v35 import KubectlV35Layer
from constructs import Construct

from trn_burnin.catalog import CATALOG
from trn_constructs.burn_in import BurnInArtifacts
from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import ClusterConfig
from trn_constructs.eks import versions
from trn_constructs.eks.burn_in import HANDOVER_GROUP, EksBurnIn, cluster_test_job
from trn_constructs.eks.burn_in import NAMESPACE as BURN_IN_NAMESPACE
from trn_constructs.eks.identity import associate, pod_identity_role
from trn_constructs.eks.scheduling import LABEL_PREFIX
from trn_constructs.eks.manifests import (
    NPD_NAMESPACE,
    NPD_SERVICE_ACCOUNT,
    SHARED_CLAIM_NAMESPACE,
    SHARED_VOLUME_NAME,
    efa_chart_values,
    neuron_chart_values,
    observability_configuration,
    shared_storage_manifests,
)
from trn_constructs.eks.nodes import TRAINIUM_NODEGROUP_NAME, ClusterNodes
from trn_constructs.findings import (
    CLOUDFORMATION_INVOKED,
    SYNCHRONOUS_HANDLER,
    acknowledge,
    acknowledge_deploy_time_function,
    managed_policy_finding,
    wildcard_finding,
)
from trn_constructs.handover.plan import HandoverPlan, KubernetesAccess
from trn_constructs.log_groups import adopt_log_groups, log_group
from trn_constructs.network import Network
from trn_constructs.operations.telemetry import NodeTelemetry
from trn_constructs.storage import SharedFileSystem
from trn_constructs.timeline import CLUSTER_TEST_BUDGET_MINUTES

EKS_CLUSTER_TEST_SECONDS = CLUSTER_TEST_BUDGET_MINUTES["eks"] * 60

CLUSTER_ADMIN_POLICY = "AmazonEKSClusterAdminPolicy"
CLOUDWATCH_NAMESPACE = "amazon-cloudwatch"
CLOUDWATCH_SERVICE_ACCOUNT = "cloudwatch-agent"
NEURON_HEALTH_METRICS_NAMESPACE = "NeuronHealthCheck"
CONTROL_PLANE_LOG_TYPES = (
    eks.ClusterLoggingTypes.API,
    eks.ClusterLoggingTypes.AUDIT,
    eks.ClusterLoggingTypes.AUTHENTICATOR,
    eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
    eks.ClusterLoggingTypes.SCHEDULER,
)


def cluster_name(stack_name: str) -> str:
    """The EKS cluster's name: the cluster stack's (TrnClusterStack's). Fixed, so that log groups
    named after it (control plane, Container Insights) can exist before the cluster does."""
    return stack_name


def endpoint_access(public_access_cidrs: tuple[str, ...]) -> eks.EndpointAccess:
    """Private only unless the configuration names CIDRs allowed to reach the public endpoint."""
    if not public_access_cidrs:
        return eks.EndpointAccess.PRIVATE
    return eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*public_access_cidrs)


class EksOrchestrator(Construct):
    """The EKS orchestrator (``orchestrator=eks``).

    Uses ``aws_eks_v2`` (a native ``AWS::EKS::Cluster``); its kubectl provider, a Lambda function in
    the cluster subnets, applies the Helm charts and manifests through the private endpoint.
    ``image_ssm_parameter``: the SSM parameter holding a custom Trainium node image id (None: the
    EKS Neuron AMI type).

    Attributes:
        cluster: the EKS cluster.
        nodes: the node groups (``nodes.trainium_nodegroup``, ``nodes.system_nodegroup``).
        device_plugins: the Neuron and EFA device plugin charts.
        pod_identity_agent: the add-on that hands roles to service accounts.
        node_monitoring_agent: the add-on whose node conditions node auto repair acts on.
        observability: the CloudWatch Observability add-on (Container Insights); what must exist
            before its agents write (their log groups) is added as its dependency.
        update_kubeconfig_command: the command that points kubectl at the cluster.
    """

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
        telemetry: NodeTelemetry,
        cluster_test: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self._capacity, self._config, self._artifacts, self._network = capacity, config, artifacts, network
        log_retention, image_ssm_parameter = config.log_retention, config.image_ssm_parameter
        file_system_capacity_gib = config.fsx.storage_capacity_gib
        eks_config = config.eks
        self.cluster_name = name = cluster_name
        # A fixed name lets the control-plane log group exist (with our retention) before EKS
        # would create it with none.
        control_plane_logs = log_group(
            self, "ControlPlaneLogs", name=f"/aws/eks/{name}/cluster", retention=log_retention
        )
        secrets_key = kms.Key(
            self,
            "SecretsKey",
            description="Envelope encryption of the EKS cluster's Kubernetes secrets",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.cluster = eks.Cluster(
            self,
            "Cluster",
            cluster_name=name,
            version=eks.KubernetesVersion.of(eks_config.kubernetes_version),
            vpc=network.vpc,
            vpc_subnets=[ec2.SubnetSelection(subnets=network.cluster_subnets)],
            endpoint_access=endpoint_access(eks_config.public_access_cidrs),
            cluster_logging=list(CONTROL_PLANE_LOG_TYPES),
            secrets_encryption_key=secrets_key,
            # Managed node groups below, not Auto Mode: the Neuron DRA driver and Capacity Blocks
            # with EFA launch templates need node groups.
            default_capacity_type=eks.DefaultCapacityType.NODEGROUP,
            default_capacity=0,
            output_config_command=False,
            kubectl_provider_options=eks.KubectlProviderOptions(
                kubectl_layer=KubectlV35Layer(self, "KubectlLayer")
            ),
        )
        self.cluster.node.add_dependency(control_plane_logs)
        # KubectlProviderOptions has no log group setting: its two groups get the kit's settings
        # on their CloudFormation resources instead.
        adopt_log_groups(self.cluster.node.find_child("KubectlProvider"), log_retention)
        self._acknowledge_cluster_internals()

        if eks_config.admin_role_arn:
            self.cluster.grant_access(
                "AdminAccess",
                eks_config.admin_role_arn,
                [
                    eks.AccessPolicy.from_access_policy_name(
                        CLUSTER_ADMIN_POLICY, access_scope_type=eks.AccessScopeType.CLUSTER
                    )
                ],
            )

        self.nodes = ClusterNodes(
            self,
            "Nodes",
            cluster=self.cluster,
            network=network,
            capacity=capacity,
            system_instance_type=eks_config.system_node_instance_type,
            system_node_count=eks_config.system_node_count,
            log_retention=log_retention,
            image_ssm_parameter=image_ssm_parameter,
        )
        self.other_nodes = eks_config.system_node_count
        self._add_addons(capacity)
        self.observability.node.add_dependency(telemetry)
        self._add_shared_storage(storage, file_system_capacity_gib)
        self.burn_in = EksBurnIn(
            self,
            "BurnIn",
            cluster=self.cluster,
            artifacts=artifacts,
            capacity=capacity,
            burn_in=config.burn_in,
            after=[self.nodes.trainium_nodegroup, self.pod_identity_agent, *self.device_plugins],
        )

        role_arg = f" --role-arn {eks_config.admin_role_arn}" if eks_config.admin_role_arn else ""
        self.update_kubeconfig_command = (
            f"aws eks update-kubeconfig --name {self.cluster.cluster_name} "
            f"--region {stack.region}{role_arg}"
        )
        self._add_outputs()

    def _add_addons(self, capacity: CapacityTarget) -> None:
        """EKS add-ons and Helm charts; they wait for the system nodes their controllers run on."""
        system_nodes = self.nodes.system_nodegroup
        pod_identity_agent = self._addon("PodIdentityAgent", "eks-pod-identity-agent")
        # Static provisioning only (see _add_shared_storage): the driver makes no AWS calls,
        # so it gets no role.
        self.fsx_csi_driver = self._addon("FsxCsiDriver", "aws-fsx-csi-driver")
        # The conditions node auto repair acts on besides Ready. A replaced node comes back as a
        # new, tainted Node and burns in; the burn-in's boot check makes a rebooted one burn in
        # again too (trn_constructs.validation.eks.boot_check_daemon_set).
        self.node_monitoring_agent = self._addon("NodeMonitoringAgent", "eks-node-monitoring-agent")

        agent_role = pod_identity_role(
            self,
            "CloudWatchAgentRole",
            "Container Insights agent: metrics (incl. neuron-monitor) and logs",
        )
        agent_role.add_managed_policy(
            iam.ManagedPolicy.from_aws_managed_policy_name("CloudWatchAgentServerPolicy")
        )
        acknowledge(
            agent_role,
            managed_policy_finding("CloudWatchAgentServerPolicy"),
            "CloudWatchAgentServerPolicy is the policy the CloudWatch Observability add-on documents "
            "for its agent; AWS keeps it in step with the agent's API calls",
        )
        observability = self._addon(
            "CloudWatchObservability",
            "amazon-cloudwatch-observability",
            # Neuron metrics for every catalog type (Trainium3 names included) and the
            # configured one, which configuration may have renamed.
            configuration_values=observability_configuration(
                [*(spec.instance_type for spec in CATALOG.values()), capacity.instance_type]
            ),
        )
        observability.node.add_dependency(
            associate(
                self,
                "CloudWatchAgentIdentity",
                self.cluster,
                CLOUDWATCH_NAMESPACE,
                CLOUDWATCH_SERVICE_ACCOUNT,
                agent_role,
            ),
            pod_identity_agent,
        )

        neuron = self.cluster.add_helm_chart(
            "NeuronChart",
            chart="neuron-helm-chart",
            repository=versions.NEURON_HELM_CHART,
            version=versions.NEURON_HELM_CHART_VERSION,
            release="neuron",
            # The release namespace is the node problem detector's; device plugin and scheduler
            # extension go to kube-system through the chart's own overrides.
            namespace=NPD_NAMESPACE,
            values=neuron_chart_values(capacity.instance_type),
        )
        neuron.node.add_dependency(
            associate(
                self,
                "NodeRecoveryIdentity",
                self.cluster,
                NPD_NAMESPACE,
                NPD_SERVICE_ACCOUNT,
                self._node_recovery_role(),
            ),
            pod_identity_agent,
        )
        efa = self.cluster.add_helm_chart(
            "EfaDevicePlugin",
            chart=versions.EFA_HELM_CHART,
            repository=versions.EFA_HELM_CHART_REPOSITORY,
            version=versions.EFA_HELM_CHART_VERSION,
            release=versions.EFA_HELM_CHART,
            namespace="kube-system",
            values=efa_chart_values(capacity.instance_type),
        )
        for dependent in (
            pod_identity_agent, self.fsx_csi_driver, self.node_monitoring_agent, observability,
            neuron, efa,
        ):
            dependent.node.add_dependency(system_nodes)
        # Workloads that claim Neuron devices or EFA interfaces wait for these.
        self.device_plugins = (neuron, efa)
        self.pod_identity_agent = pod_identity_agent
        self.observability = observability

    def handover_plan(self) -> HandoverPlan:
        """Scale the Trainium node group's Auto Scaling group to the block at the handover's start
        and replace a node by terminating it in that group (which relaunches into the slot); the
        cluster test's Job and cordoning before the block ends through the Kubernetes API, from
        the cluster's subnets (its endpoint is private), as the kit's Kubernetes group."""
        stack = Stack.of(self)
        nodegroup = self.nodes.trainium_nodegroup
        groups = stack.format_arn(service="autoscaling", resource="autoScalingGroup", resource_name="*",
                                  arn_format=ArnFormat.COLON_RESOURCE_NAME)
        nodegroup_arn = stack.format_arn(
            service="eks", resource="nodegroup", resource_name=f"{self.cluster_name}/{TRAINIUM_NODEGROUP_NAME}/*")
        statements = (
            iam.PolicyStatement(actions=["eks:DescribeCluster"], resources=[self.cluster.cluster_arn]),
            iam.PolicyStatement(actions=["eks:DescribeNodegroup"], resources=[nodegroup_arn]),
            iam.PolicyStatement(actions=["autoscaling:DescribeAutoScalingGroups"], resources=["*"]),
            iam.PolicyStatement(
                actions=["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                resources=[groups],
                conditions={"StringEquals": {"autoscaling:ResourceTag/eks:nodegroup-name": TRAINIUM_NODEGROUP_NAME}},
            ),
        )  # fmt: skip
        findings = (
            ("AwsSolutions-IAM5[Resource::*]",
             "DescribeAutoScalingGroups has no resource-level permissions; scaling and termination are limited "
             "by condition to the Trainium node group's Auto Scaling group"),
            (wildcard_finding(self, groups),
             "EKS names the node group's Auto Scaling group at deploy time; the condition limits the grant to it"),
            (wildcard_finding(self, nodegroup_arn), "EKS ends the node group's ARN in a generated id"),
            (managed_policy_finding("service-role/AWSLambdaVPCAccessExecutionRole"),
             "The handover's functions reach the cluster's private endpoint from its subnets"),
        )
        job = cluster_test_job(artifacts=self._artifacts, capacity=self._capacity, burn_in=self._config.burn_in,
                               deadline_seconds=EKS_CLUSTER_TEST_SECONDS)
        settings = {
            "cluster_name": self.cluster_name,
            "nodegroup_name": TRAINIUM_NODEGROUP_NAME,
            "namespace": BURN_IN_NAMESPACE,
            "node_selector": {LABEL_PREFIX + "instance-type": self._capacity.instance_type},
            "job": job,
        }
        return HandoverPlan(
            orchestrator="eks",
            settings=settings,
            statements=statements,
            findings=findings,
            node_fingerprint=self.nodes.trainium_fingerprint,
            vpc=self._network.vpc,
            subnets=tuple(self._network.cluster_subnets),
            security_groups=(ec2.SecurityGroup.from_security_group_id(
                self, "ClusterSecurityGroup", self.cluster.cluster_security_group_id),),
            kubernetes=KubernetesAccess(cluster_name=self.cluster_name, groups=(HANDOVER_GROUP,)),
        )

    def _addon(
        self, construct_id: str, name: str, configuration_values: dict | None = None
    ) -> eks.Addon:
        return eks.Addon(
            self,
            construct_id,
            cluster=self.cluster,
            addon_name=name,
            addon_version=versions.ADDON_VERSIONS[name],
            configuration_values=configuration_values,
            preserve_on_delete=False,
        )

    def _node_recovery_role(self) -> iam.Role:
        """What the Neuron node recovery agent needs to replace a node with failed Neuron hardware
        (the Neuron documentation's policy), scoped to the Trainium node group where EC2 allows."""
        role = pod_identity_role(
            self,
            "NodeRecoveryRole",
            "Neuron node problem detector: mark failed nodes unhealthy, metrics",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["autoscaling:SetInstanceHealth"],
                resources=["*"],
                conditions={
                    "StringEquals": {
                        "autoscaling:ResourceTag/eks:nodegroup-name": (
                            self.nodes.trainium_nodegroup.nodegroup_name
                        )
                    }
                },
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["autoscaling:DescribeAutoScalingInstances", "ec2:DescribeInstances"],
                resources=["*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={
                    "StringEquals": {"cloudwatch:namespace": NEURON_HEALTH_METRICS_NAMESPACE}
                },
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "Describe calls and PutMetricData have no resource-level permissions; SetInstanceHealth "
            "is limited by tag to the Trainium node group's Auto Scaling group (its name is EKS's) "
            "and PutMetricData to the NeuronHealthCheck namespace",
        )
        return role

    def _add_shared_storage(self, storage: SharedFileSystem, capacity_gib: int) -> None:
        """The stack's FSx for Lustre file system as a PersistentVolume and a bound claim."""
        manifest = self.cluster.add_manifest(
            "SharedStorage",
            *shared_storage_manifests(
                file_system_id=storage.file_system_id,
                dns_name=storage.dns_name,
                mount_name=storage.mount_name,
                capacity_gib=capacity_gib,
            ),
        )
        # The claim only binds once the CSI driver is registered.
        manifest.node.add_dependency(self.fsx_csi_driver)

    def _add_outputs(self) -> None:
        outputs = {
            "UpdateKubeconfigCommand": (
                self.update_kubeconfig_command,
                "Run to point kubectl at the cluster (private endpoint: from inside the VPC, or "
                "from an allowed CIDR when eksPublicAccessCidrs is set)",
            ),
            "ClusterName": (self.cluster.cluster_name, "EKS cluster name"),
            "TrainiumNodegroupName": (
                self.nodes.trainium_nodegroup.nodegroup_name,
                "Managed node group of the Trainium nodes in the Capacity Block",
            ),
            "SharedStorageClaim": (
                f"{SHARED_CLAIM_NAMESPACE}/{SHARED_VOLUME_NAME}",
                "PersistentVolumeClaim (namespace/name) bound to the FSx for Lustre file system",
            ),
        }
        for name, (value, description) in outputs.items():
            CfnOutput(Stack.of(self), name, value=value, description=description)

    def _acknowledge_cluster_internals(self) -> None:
        """Findings on resources aws-cdk-lib's EKS module creates and owns, each acknowledged next to
        the resource it is about, with the reason it cannot change here."""
        stack = Stack.of(self)
        acknowledge(
            self.cluster.node.find_child("Role"),
            managed_policy_finding("AmazonEKSClusterPolicy"),
            "The EKS service role needs exactly AmazonEKSClusterPolicy, which EKS documents and "
            "AWS updates with the service",
        )
        provider = self.cluster.node.find_child("KubectlProvider")
        handler = provider.node.find_child("Handler")
        ecr_public = stack.get_logical_id(handler.node.find_child("HasEcrPublic"))
        # aws-cdk-lib attaches the public-ECR read policy only in the aws partition.
        conditional_ecr_public = {
            "Fn::If": [
                ecr_public,
                {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"},
                                   ":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly"]]},
                {"Ref": "AWS::NoValue"},
            ]
        }  # fmt: skip
        for finding in (
            managed_policy_finding("service-role/AWSLambdaBasicExecutionRole"),
            managed_policy_finding("service-role/AWSLambdaVPCAccessExecutionRole"),
            managed_policy_finding("AmazonEC2ContainerRegistryReadOnly"),
            f"AwsSolutions-IAM4[Policy::{json.dumps(conditional_ecr_public, separators=(',', ':'))}]",
        ):
            acknowledge(
                provider,
                finding,
                "aws-cdk-lib's kubectl provider attaches these managed policies: Lambda logging and "
                "VPC networking, and image registry reads so Helm can pull OCI charts",
            )
        acknowledge(
            provider,
            f"AwsSolutions-IAM5[Resource::<{stack.get_logical_id(handler.node.default_child)}.Arn>:*]",
            "The custom resource framework invokes any version of the kubectl handler it owns",
        )
        acknowledge(
            provider,
            "AwsSolutions-L1",
            "aws-cdk-lib picks the kubectl handler's Python runtime (the newest its layers support)",
        )
        # Both run in the cluster subnets, so that kubectl reaches the private endpoint.
        acknowledge_deploy_time_function(handler, SYNCHRONOUS_HANDLER, in_vpc=True, environment=True)
        acknowledge_deploy_time_function(
            provider.node.find_child("Provider").node.find_child("framework-onEvent"),
            CLOUDFORMATION_INVOKED,
            in_vpc=True,
            environment=True,
        )
