"""The EKS orchestrator's template: cluster, Trainium node group in the Capacity Block with EFA,
system node group, add-ons, Helm charts and outputs (`orchestrator=eks`)."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from tests.conftest import CDK_CONTEXT, VARIANTS, synth, synth_variant
from trn_burnin.catalog import CATALOG
from trn_constructs.eks import BURN_IN_TAINT_KEY, BURN_IN_TAINT_VALUE

ADMIN_ROLE = "arn:aws:iam::123456789012:role/PlatformAdmin"
ALLOWED_CIDRS = ["203.0.113.0/24", "198.51.100.7/32"]
# Everything the default eks variant leaves at its default, in one synthesis.
OPEN_ENDPOINT = {
    **VARIANTS["eks"],
    "eksAdminRoleArn": ADMIN_ROLE,
    "eksPublicAccessCidrs": ALLOWED_CIDRS,
    "eksKubernetesVersion": "1.35",
}


@pytest.fixture(scope="module")
def eks_stack():
    return synth_variant("eks")


@pytest.fixture(scope="module")
def template(eks_stack):
    return eks_stack.template


def only(template, resource_type: str, props: dict | None = None) -> dict:
    found = template.find_resources(resource_type, {"Properties": props} if props else None)
    assert len(found) == 1, f"{resource_type}: {list(found)}"
    return next(iter(found.values()))


def trainium_nodegroup(template) -> dict:
    return only(template, "AWS::EKS::Nodegroup", {"CapacityType": "CAPACITY_BLOCK"})


def trainium_launch_template(template) -> dict:
    found = template.find_resources(
        "AWS::EC2::LaunchTemplate",
        {"Properties": {"LaunchTemplateData": {"InstanceMarketOptions": Match.any_value()}}},
    )
    assert len(found) == 1
    return next(iter(found.values()))


def logical_id(template, resource_type: str, props: dict) -> str:
    found = template.find_resources(resource_type, {"Properties": props})
    assert len(found) == 1
    return next(iter(found))


# --- cluster --------------------------------------------------------------------------------


def test_cluster_is_native_pinned_private_logged_and_encrypted(template):
    template.resource_count_is("AWS::EKS::Cluster", 1)
    template.resource_count_is("Custom::AWSCDK-EKS-Cluster", 0)
    template.has_resource_properties(
        "AWS::EKS::Cluster",
        {
            "Version": "1.34",
            "AccessConfig": {"AuthenticationMode": "API"},
            "ResourcesVpcConfig": {
                "EndpointPrivateAccess": True,
                "EndpointPublicAccess": False,
                "SubnetIds": [
                    {"Ref": Match.string_like_regexp("^NetworkVpcComputeSubnet1")},
                    {"Ref": Match.string_like_regexp("^NetworkVpcComputeSubnet2")},
                ],
            },
            "Logging": {
                "ClusterLogging": {
                    "EnabledTypes": [
                        {"Type": t}
                        for t in ("api", "audit", "authenticator", "controllerManager", "scheduler")
                    ]
                }
            },
            "EncryptionConfig": [
                {
                    "Provider": {"KeyArn": {"Fn::GetAtt": [Match.string_like_regexp("^EksSecretsKey"), "Arn"]}},
                    "Resources": ["secrets"],
                }
            ],
            # No Auto Mode: managed node groups only.
            "ComputeConfig": {"Enabled": False},
        },
    )
    template.has_resource_properties(
        "AWS::KMS::Key",
        {"EnableKeyRotation": True, "Description": Match.string_like_regexp("Kubernetes secrets")},
    )


def test_control_plane_logs_are_kept_for_the_configured_retention(template):
    template.has_resource_properties(
        "AWS::Logs::LogGroup",
        {"LogGroupName": "/aws/eks/TrnClusterStack/cluster", "RetentionInDays": 90},
    )
    cluster = only(template, "AWS::EKS::Cluster")
    log_group = logical_id(
        template, "AWS::Logs::LogGroup", {"LogGroupName": "/aws/eks/TrnClusterStack/cluster"}
    )
    assert log_group in cluster["DependsOn"]


def test_endpoint_pinned_version_and_admin_access_follow_configuration():
    template = synth(**OPEN_ENDPOINT).template
    template.has_resource_properties(
        "AWS::EKS::Cluster",
        {
            "Version": "1.35",
            "ResourcesVpcConfig": {
                "EndpointPrivateAccess": True,
                "EndpointPublicAccess": True,
                "PublicAccessCidrs": ALLOWED_CIDRS,
            },
        },
    )
    template.has_resource_properties(
        "AWS::EKS::AccessEntry",
        {
            "PrincipalArn": ADMIN_ROLE,
            "AccessPolicies": [
                {
                    "AccessScope": {"Type": "cluster"},
                    "PolicyArn": {
                        "Fn::Join": [
                            "",
                            [
                                "arn:",
                                {"Ref": "AWS::Partition"},
                                ":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                            ],
                        ]
                    },
                }
            ],
        },
    )
    command = template.to_json()["Outputs"]["UpdateKubeconfigCommand"]["Value"]
    assert command["Fn::Join"][1][-1] == f" --region us-east-2 --role-arn {ADMIN_ROLE}"


def test_without_admin_role_only_the_kubectl_provider_and_the_handover_get_access_entries(eks_stack):
    # The deploying principal is the cluster creator; the kubectl provider's role is CDK's.
    entry = only(eks_stack.infra, "AWS::EKS::AccessEntry")
    assert entry["Properties"]["PrincipalArn"]["Fn::GetAtt"][0].startswith(
        "EksClusterKubectlProviderHandlerServiceRole"
    )
    # The handover's functions: no access policy, only the Kubernetes group the kit's RBAC binds.
    entries = eks_stack.handover.find_resources("AWS::EKS::AccessEntry")
    roles = sorted(e["Properties"]["PrincipalArn"]["Fn::GetAtt"][0] for e in entries.values())
    assert [r.startswith(p) for r, p in zip(roles, ("HandoverAdvanceServiceRole", "HandoverStopNewWorkServiceRole"))] == [
        True, True]
    for entry in entries.values():
        assert entry["Properties"]["KubernetesGroups"] == ["trn-kit:handover"]
        assert entry["Properties"]["Type"] == "STANDARD"
        assert "AccessPolicies" not in entry["Properties"]


def test_slurm_stacks_have_no_eks_resources(default_stack):
    for resource_type in ("AWS::EKS::Cluster", "AWS::EKS::Nodegroup", "Custom::AWSCDK-EKS-HelmChart"):
        default_stack.template.resource_count_is(resource_type, 0)


# --- Trainium node group --------------------------------------------------------------------


def test_trainium_nodegroup_waits_at_zero_for_the_handover_and_updates_without_a_spare_slot(template):
    nodegroup = trainium_nodegroup(template)["Properties"]
    count = CDK_CONTEXT["instanceCount"]
    assert nodegroup["AmiType"] == "AL2023_x86_64_NEURON"
    assert nodegroup["NodegroupName"] == "trainium"
    # At 0 until the handover scales its group to the block (so before the block starts, and after
    # EKS's scale-down at the end of a previous one); never above the block.
    assert nodegroup["ScalingConfig"] == {"MinSize": 0, "MaxSize": count, "DesiredSize": 0}
    # An update terminates the old nodes first, all of them at once: a full block has no spare slot.
    assert nodegroup["UpdateConfig"] == {"MaxUnavailablePercentage": 100, "UpdateStrategy": "MINIMAL"}
    assert nodegroup["NodeRepairConfig"] == {"Enabled": True}
    # One subnet: the compute subnet in the block's AZ, where EFA OS-bypass works.
    assert len(nodegroup["Subnets"]) == 1
    assert nodegroup["Subnets"][0]["Ref"].startswith("NetworkVpcComputeSubnet1")
    # The instance type lives in the launch template (Capacity Block requirement).
    assert "InstanceTypes" not in nodegroup
    launch_template = logical_id(
        template,
        "AWS::EC2::LaunchTemplate",
        {"LaunchTemplateData": {"InstanceMarketOptions": Match.any_value()}},
    )
    assert nodegroup["LaunchTemplate"] == {
        "Id": {"Ref": launch_template},
        "Version": {"Fn::GetAtt": [launch_template, "LatestVersionNumber"]},
    }


def test_trainium_nodes_start_tainted_until_burn_in(template):
    nodegroup = trainium_nodegroup(template)["Properties"]
    assert nodegroup["Taints"] == [
        {"Key": BURN_IN_TAINT_KEY, "Value": BURN_IN_TAINT_VALUE, "Effect": "NO_SCHEDULE"}
    ]
    assert (BURN_IN_TAINT_KEY, BURN_IN_TAINT_VALUE) == ("trn-kit/burn-in", "pending")


def test_trainium_nodes_are_labelled_from_the_catalog(template):
    assert trainium_nodegroup(template)["Properties"]["Labels"] == {
        "trn-kit/instance-type": "trn3.48xlarge",
        "trn-kit/catalog-entry": "trn3-gen1",
        "trn-kit/neuron-cores": "128",
        "trn-kit/efa-network-cards": "16",
        "trn-kit/instances-per-ultraserver": "4",
        "trn-kit/ultraserver-type": "u-trn3x64",
    }


def test_launch_template_targets_the_capacity_block(template):
    data = trainium_launch_template(template)["Properties"]["LaunchTemplateData"]
    assert data["InstanceMarketOptions"] == {"MarketType": "capacity-block"}
    assert data["CapacityReservationSpecification"] == {
        "CapacityReservationTarget": {"CapacityReservationId": "cr-0123456789abcdef0"}
    }
    assert data["InstanceType"] == "trn3.48xlarge"


def test_launch_template_requires_imdsv2_for_the_node_only_and_a_large_encrypted_root(template):
    data = trainium_launch_template(template)["Properties"]["LaunchTemplateData"]
    # One hop: a pod outside the host network gets no answer, so no node role credentials.
    assert data["MetadataOptions"] == {
        "HttpEndpoint": "enabled",
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 1,
    }
    assert data["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {"VolumeSize": 512, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True},
        }
    ]
    # The catalog's figure, the one the Slurm head and compute nodes get too.
    assert CATALOG["trn3-gen1"].root_volume_gib == 512


EFA_CASES = {
    "trn2": ({"instanceType": "trn2.48xlarge", "instanceCount": 2}, CATALOG["trn2"], False),
    "trn3-gen2-overridden": (
        {
            "instanceType": "trn3x.16xlarge",
            "instanceCount": 36,
            "catalogOverrides": {"trn3-gen2": {"instanceType": "trn3x.16xlarge", "efaNetworkCards": 6}},
        },
        CATALOG["trn3-gen2"].with_overrides(instance_type="trn3x.16xlarge", efa_network_cards=6),
        True,
    ),
}


@pytest.fixture(scope="module", params=sorted(EFA_CASES))
def efa_case(request):
    overrides, instance, uncertain = EFA_CASES[request.param]
    return synth(orchestrator="eks", **overrides).template, instance, uncertain


def test_one_efa_interface_per_network_card_in_awss_layout(efa_case):
    template, instance, _ = efa_case
    data = trainium_launch_template(template)["Properties"]["LaunchTemplateData"]
    interfaces = data["NetworkInterfaces"]
    assert [(i["NetworkCardIndex"], i["DeviceIndex"], i["InterfaceType"]) for i in interfaces] == [
        (e.network_card_index, e.device_index, e.interface_type) for e in instance.efa_interfaces()
    ]
    assert sorted({i["NetworkCardIndex"] for i in interfaces}) == list(range(instance.efa_network_cards))
    # Exactly one routable interface; every other one is EFA-only.
    assert [i["InterfaceType"] for i in interfaces].count("interface") == 1
    for interface in interfaces:
        assert "SubnetId" not in interface  # the node group places them in the compute subnet
        assert interface["DeleteOnTermination"] is True
        groups = [g["Fn::GetAtt"][0] for g in interface["Groups"]]
        assert any(g.startswith("NetworkEfaSecurityGroup") for g in groups)
        assert any(g.startswith("NetworkNodeSecurityGroup") for g in groups)
        assert any(g.startswith("EksCluster") for g in groups)  # control plane <-> kubelet


def test_efa_case_fills_the_block_and_labels_the_type(efa_case):
    template, instance, _ = efa_case
    nodegroup = trainium_nodegroup(template)["Properties"]
    assert nodegroup["Labels"]["trn-kit/instance-type"] == instance.instance_type
    assert nodegroup["Labels"]["trn-kit/efa-network-cards"] == str(instance.efa_network_cards)
    assert (instance.ultraserver_type is None) == ("trn-kit/ultraserver-type" not in nodegroup["Labels"])
    data = trainium_launch_template(template)["Properties"]["LaunchTemplateData"]
    assert data["InstanceType"] == instance.instance_type


def test_only_uncertain_instance_types_skip_cfn_lints_type_check(efa_case):
    template, _, uncertain = efa_case
    metadata = trainium_launch_template(template).get("Metadata", {})
    if uncertain:
        assert metadata["cfn-lint"] == {"config": {"ignore_checks": ["E3628"]}}
    else:
        assert "cfn-lint" not in metadata
    for resource in template.find_resources("AWS::EKS::Nodegroup").values():
        assert "cfn-lint" not in resource.get("Metadata", {})


# --- system node group and node role --------------------------------------------------------


def test_system_nodegroup_is_small_general_purpose_and_in_both_cluster_subnets(template):
    nodegroup = only(template, "AWS::EKS::Nodegroup", {"AmiType": "AL2023_x86_64_STANDARD"})
    props = nodegroup["Properties"]
    assert props["InstanceTypes"] == ["m7i.xlarge"]
    assert props["ScalingConfig"] == {"MinSize": 2, "MaxSize": 2, "DesiredSize": 2}
    assert "CapacityType" not in props and "Taints" not in props
    assert [s["Ref"][:25] for s in props["Subnets"]] == ["NetworkVpcComputeSubnet1S", "NetworkVpcComputeSubnet2S"]
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": {
                "SecurityGroupIds": [
                    {"Fn::GetAtt": [Match.string_like_regexp("^NetworkNodeSecurityGroup"), "GroupId"]},
                    {"Fn::GetAtt": [Match.string_like_regexp("^EksCluster"), "ClusterSecurityGroupId"]},
                ],
                "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
                "BlockDeviceMappings": [{"Ebs": {"Encrypted": True}}],
            }
        },
    )


def test_nodes_share_a_role_with_the_eks_node_policies(template):
    role_id = trainium_nodegroup(template)["Properties"]["NodeRole"]["Fn::GetAtt"][0]
    system = only(template, "AWS::EKS::Nodegroup", {"AmiType": "AL2023_x86_64_STANDARD"})
    assert system["Properties"]["NodeRole"]["Fn::GetAtt"][0] == role_id
    role = template.to_json()["Resources"][role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    policies = sorted(p["Fn::Join"][1][-1].rsplit("/", 1)[-1] for p in role["ManagedPolicyArns"])
    assert policies == [
        "AmazonEC2ContainerRegistryPullOnly",
        "AmazonEKSWorkerNodePolicy",
        "AmazonEKS_CNI_Policy",
        "AmazonSSMManagedInstanceCore",
    ]


# --- add-ons and charts ---------------------------------------------------------------------


def helm_chart(template, release: str) -> dict:
    props = only(template, "Custom::AWSCDK-EKS-HelmChart", {"Release": release})["Properties"]
    return {**props, "Values": json.loads(props["Values"])}


def test_neuron_chart_is_pinned_and_runs_its_daemons_on_tainted_trainium_nodes(template):
    chart = helm_chart(template, "neuron")
    assert (chart["Repository"], chart["Chart"], chart["Version"]) == (
        "oci://public.ecr.aws/neuron/neuron-helm-chart",
        "neuron-helm-chart",
        "1.9.0",
    )
    assert chart["Namespace"] == "neuron-healthcheck-system"
    values = chart["Values"]
    assert values["neuronInstances"] == ["trn3.48xlarge"]
    assert {"key": BURN_IN_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"} in values[
        "devicePlugin"
    ]["tolerations"]
    # Its kube-scheduler v1.31 would be outside the skew policy of a 1.34/1.35 control plane.
    assert values["scheduler"] == {"enabled": False}
    assert values["npd"] == {"enabled": True, "nodeRecovery": {"enabled": True}}


def test_efa_device_plugin_chart_is_pinned_and_tolerates_the_burn_in_taint(template):
    chart = helm_chart(template, "aws-efa-k8s-device-plugin")
    assert (chart["Repository"], chart["Chart"], chart["Version"], chart["Namespace"]) == (
        "https://aws.github.io/eks-charts",
        "aws-efa-k8s-device-plugin",
        "v0.5.30",
        "kube-system",
    )
    assert chart["Values"] == {
        "supportedInstanceLabels": {
            "keys": ["node.kubernetes.io/instance-type"],
            "values": ["trn3.48xlarge"],
        },
        "tolerations": [{"key": BURN_IN_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    }


def test_eks_addons_are_pinned(template):
    addons = {
        a["Properties"]["AddonName"]: a["Properties"].get("AddonVersion")
        for a in template.find_resources("AWS::EKS::Addon").values()
    }
    assert addons == {
        "eks-pod-identity-agent": "v1.4.0-eksbuild.1",
        "aws-fsx-csi-driver": "v1.7.0-eksbuild.1",
        "eks-node-monitoring-agent": "v1.6.4-eksbuild.1",
        "amazon-cloudwatch-observability": "v6.4.0-eksbuild.1",
    }


def test_auto_repair_sees_the_node_monitoring_agents_conditions(template):
    # Without the agent, auto repair acts on the kubelet's Ready alone; with it, also on
    # AcceleratedHardwareReady (the Neuron errors the burn-in fails a node on) and NetworkingReady.
    agent = only(template, "AWS::EKS::Addon", {"AddonName": "eks-node-monitoring-agent"})
    assert "ServiceAccountRoleArn" not in agent["Properties"]  # it needs no AWS permissions
    assert "ConfigurationValues" not in agent["Properties"]  # its chart tolerates every taint
    assert trainium_nodegroup(template)["Properties"]["NodeRepairConfig"] == {"Enabled": True}


def neuron_monitor_instance_types(template) -> list[str]:
    addon = only(template, "AWS::EKS::Addon", {"AddonName": "amazon-cloudwatch-observability"})
    configuration = json.loads(addon["Properties"]["ConfigurationValues"])
    affinity = configuration["neuronMonitor"]["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (expression,) = term["matchExpressions"]
    assert (expression["key"], expression["operator"]) == ("node.kubernetes.io/instance-type", "In")
    assert list(configuration) == ["neuronMonitor"]
    return expression["values"]


def test_neuron_metrics_cover_every_catalog_instance_type(template):
    # The add-on's own list (chart 6.4.0) has no Trainium3 name.
    assert neuron_monitor_instance_types(template) == sorted(
        spec.instance_type for spec in CATALOG.values()
    )


def test_neuron_metrics_follow_a_renamed_instance_type():
    renamed = synth(
        **VARIANTS["eks"],
        catalogOverrides={"trn3-gen1": {"instanceType": "trn3u.48xlarge"}},
        instanceType="trn3u.48xlarge",
    )
    assert "trn3u.48xlarge" in neuron_monitor_instance_types(renamed.template)


def test_addons_and_charts_wait_for_the_system_nodes(template):
    system = logical_id(template, "AWS::EKS::Nodegroup", {"AmiType": "AL2023_x86_64_STANDARD"})
    for resource_type in ("AWS::EKS::Addon", "Custom::AWSCDK-EKS-HelmChart"):
        for resource in template.find_resources(resource_type).values():
            assert system in resource["DependsOn"]


def pod_identity(template, service_account: str) -> tuple[dict, dict]:
    association = only(
        template, "AWS::EKS::PodIdentityAssociation", {"ServiceAccount": service_account}
    )["Properties"]
    role = template.to_json()["Resources"][association["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    return association, role


def test_cloudwatch_agent_gets_its_policy_through_pod_identity(template):
    association, role = pod_identity(template, "cloudwatch-agent")
    assert association["Namespace"] == "amazon-cloudwatch"
    assert role["ManagedPolicyArns"][0]["Fn::Join"][1][-1].endswith("/CloudWatchAgentServerPolicy")


def test_node_recovery_may_only_mark_trainium_nodes_unhealthy(template):
    association, _ = pod_identity(template, "node-problem-detector")
    assert association["Namespace"] == "neuron-healthcheck-system"
    role_id = next(
        k
        for k, v in template.find_resources("AWS::IAM::Role").items()
        if k.startswith("EksNodeRecoveryRole")
    )
    policy = only(template, "AWS::IAM::Policy", {"Roles": [{"Ref": role_id}]})["Properties"]
    statements = {
        json.dumps(s["Action"]): s for s in policy["PolicyDocument"]["Statement"]
    }
    health = statements['"autoscaling:SetInstanceHealth"']
    nodegroup = logical_id(template, "AWS::EKS::Nodegroup", {"CapacityType": "CAPACITY_BLOCK"})
    assert health["Condition"] == {
        "StringEquals": {
            "autoscaling:ResourceTag/eks:nodegroup-name": {"Fn::GetAtt": [nodegroup, "NodegroupName"]}
        }
    }
    metrics = statements['"cloudwatch:PutMetricData"']
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "NeuronHealthCheck"}}


def test_fsx_csi_driver_has_no_aws_permissions(template):
    addon = only(template, "AWS::EKS::Addon", {"AddonName": "aws-fsx-csi-driver"})["Properties"]
    assert "ServiceAccountRoleArn" not in addon and "PodIdentityAssociations" not in addon
    template.resource_properties_count_is(
        "AWS::EKS::PodIdentityAssociation", {"ServiceAccount": Match.string_like_regexp("fsx")}, 0
    )


# --- outputs --------------------------------------------------------------------------------


def test_outputs_tell_how_to_connect(template):
    outputs = template.to_json()["Outputs"]
    cluster = logical_id(template, "AWS::EKS::Cluster", {"Version": "1.34"})
    nodegroup = logical_id(template, "AWS::EKS::Nodegroup", {"CapacityType": "CAPACITY_BLOCK"})
    assert outputs["UpdateKubeconfigCommand"]["Value"] == {
        "Fn::Join": ["", ["aws eks update-kubeconfig --name ", {"Ref": cluster}, " --region us-east-2"]]
    }
    assert outputs["ClusterName"]["Value"] == {"Ref": cluster}
    assert outputs["TrainiumNodegroupName"]["Value"] == {"Fn::GetAtt": [nodegroup, "NodegroupName"]}
    assert outputs["SharedStorageClaim"]["Value"] == "default/fsx-lustre"
    for name in ("UpdateKubeconfigCommand", "ClusterName", "TrainiumNodegroupName", "SharedStorageClaim"):
        assert outputs[name]["Description"]
    # The cluster construct's own config-command outputs are replaced by ours.
    assert not [name for name in outputs if "ConfigCommand" in name and name != "UpdateKubeconfigCommand"]
