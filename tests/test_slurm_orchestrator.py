"""Slurm orchestrator wiring: the provider nested stack, the cluster resource, its configuration."""

from __future__ import annotations

import json
from dataclasses import replace
from fnmatch import fnmatch

import pytest
from aws_cdk import App, Fn
from aws_cdk.assertions import Match, Template

from stacks.infra_stack import TrnClusterInfraStack
from tests.conftest import context_with, synth, synth_variant
from trn_burnin.catalog import find_by_instance_type
from trn_burnin import cli
from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import parse_config
from trn_constructs.image import ImageVersions
from trn_constructs.slurm import PCLUSTER_VERSION, neuron_install

POLICY = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
ROLE = "arn:aws:iam::123456789012:role/pcluster-provider"


def cluster_resource(template: Template) -> dict:
    (resource,) = template.find_resources("Custom::PclusterCluster").values()
    return resource


def logical_id(template: Template, resource_type: str, prefix: str) -> str:
    (found,) = [k for k in template.find_resources(resource_type) if k.startswith(prefix)]
    return found


@pytest.fixture(scope="module")
def template(default_stack) -> Template:
    return default_stack.template


@pytest.fixture(scope="module")
def configuration(template) -> dict:
    return cluster_resource(template)["Properties"]["ClusterConfiguration"]


def test_provider_is_parallelclusters_regional_template_at_the_pinned_version(template):
    template.resource_count_is("AWS::CloudFormation::Stack", 1)
    template.has_resource_properties(
        "AWS::CloudFormation::Stack",
        {
            "TemplateURL": {
                "Fn::Sub": "https://${AWS::Region}-aws-parallelcluster.s3.${AWS::Region}."
                f"${{AWS::URLSuffix}}/parallelcluster/{PCLUSTER_VERSION}/templates/"
                "custom_resource/cluster.yaml"
            },
            # Defaults: ParallelCluster's own Lambda role, allowed to attach the kit's burn-in
            # node policy.
            "Parameters": {
                "AdditionalIamPolicies": {
                    "Ref": Match.string_like_regexp("^SlurmProviderAttachNodePolicies")
                }
            },
        },
    )
    assert PCLUSTER_VERSION.startswith("3.")


def test_cluster_resource_uses_the_provider_and_its_own_name(template):
    provider = logical_id(template, "AWS::CloudFormation::Stack", "SlurmProvider")
    properties = cluster_resource(template)["Properties"]
    assert properties["ServiceToken"] == {"Fn::GetAtt": [provider, "Outputs.ServiceToken"]}
    # ParallelCluster creates a stack named after the cluster: it must not be this stack's name.
    assert properties["ClusterName"] == "TrnClusterStack-slurm"


def test_queue_fills_the_capacity_block_with_efa_and_no_placement_group(template, configuration):
    scheduling = configuration["Scheduling"]
    assert scheduling["Scheduler"] == "slurm"
    # No accounting database; a changed queue replaces its nodes by terminating them first (a full
    # block has no spare slot), and they burn in before they take work.
    assert scheduling["SlurmSettings"] == {"QueueUpdateStrategy": "TERMINATE"}
    (queue,) = scheduling["SlurmQueues"]
    assert queue["CapacityType"] == "CAPACITY_BLOCK"
    (resource,) = queue["ComputeResources"]
    assert resource == {
        "Name": "trn3-48xlarge",
        "InstanceType": "trn3.48xlarge",
        "MinCount": 4,
        "MaxCount": 4,
        "Efa": {"Enabled": True},
        "CapacityReservationTarget": {"CapacityReservationId": "cr-0123456789abcdef0"},
    }
    subnet = logical_id(template, "AWS::EC2::Subnet", "NetworkVpcComputeSubnet1")
    node_sg = logical_id(template, "AWS::EC2::SecurityGroup", "NetworkNodeSecurityGroup")
    efa_sg = logical_id(template, "AWS::EC2::SecurityGroup", "NetworkEfaSecurityGroup")
    assert queue["Networking"] == {
        "SubnetIds": [{"Ref": subnet}],
        "AdditionalSecurityGroups": [
            {"Fn::GetAtt": [node_sg, "GroupId"]},
            {"Fn::GetAtt": [efa_sg, "GroupId"]},
        ],
        "PlacementGroup": {"Enabled": False},
    }
    assert queue["ComputeSettings"]["LocalStorage"]["RootVolume"]["Encrypted"] is True


def test_head_and_compute_root_volumes_are_the_catalogs_like_the_eks_launch_template(configuration):
    """The catalog field the EKS Trainium launch template uses, on the head node too: /home is NFS
    from its root volume. At least the 512 GB the Neuron setup guides ask for."""
    (queue,) = configuration["Scheduling"]["SlurmQueues"]
    (resource,) = queue["ComputeResources"]
    size = find_by_instance_type(resource["InstanceType"]).root_volume_gib
    assert size >= 512
    root = {"Size": size, "Encrypted": True}
    assert queue["ComputeSettings"]["LocalStorage"]["RootVolume"] == root
    assert configuration["HeadNode"]["LocalStorage"]["RootVolume"] == root


def test_every_node_boots_parallelclusters_official_ami(configuration):
    assert configuration["Image"] == {"Os": "ubuntu2404"}
    (queue,) = configuration["Scheduling"]["SlurmQueues"]
    assert "Image" not in queue
    assert "Image" not in configuration["HeadNode"]
    assert "CustomAmi" not in json.dumps(configuration)


def test_compute_nodes_install_the_pinned_neuron_stack_when_they_start(configuration):
    (queue,) = configuration["Scheduling"]["SlurmQueues"]
    start = queue["CustomActions"]["OnNodeStart"]
    # The script is a CDK asset in the same bucket as the burn-in bootstrap: the queue's one
    # read-only S3 grant covers both.
    assert start["Script"].startswith("s3://cdk-hnb659fds-assets-123456789012-us-east-2/")
    assert start["Script"].endswith(".sh")
    assert queue["Iam"]["S3Access"] == [
        {"BucketName": "cdk-hnb659fds-assets-123456789012-us-east-2", "EnableWriteAccess": False}
    ]
    versions = ImageVersions.load()
    args = start["Args"]
    assert args == list(neuron_install(versions).args)
    assert args[args.index("--release") + 1] == versions.neuron_sdk_release
    debs = [args[i + 1] for i, arg in enumerate(args) if arg == "--deb"]
    pips = [args[i + 1] for i, arg in enumerate(args) if arg == "--pip"]
    assert debs == [f"{name}={version}" for name, version in versions.neuron_packages.items()]
    assert pips == [
        f"{name}=={version}"
        for name, version in {
            **versions.neuron_python_packages, **versions.burn_in_python_packages
        }.items()
    ]
    assert {"neuronx-cc", "nki", "boto3"} <= {pin.split("==")[0] for pin in pips}
    # The burn-in bootstrap runs the newest /opt/aws_neuronx_venv_*/bin/python.
    venv_python = args[args.index("--venv") + 1] + "/bin/python"
    assert fnmatch(venv_python, "/opt/aws_neuronx_venv_*/bin/python")


def test_a_custom_image_from_ssm_replaces_the_compute_ami_and_start_only_checks_it():
    configuration = cluster_resource(synth(imageSsmParameter="/trn-kit/ami/slurm").template)[
        "Properties"
    ]["ClusterConfiguration"]
    (queue,) = configuration["Scheduling"]["SlurmQueues"]
    assert queue["Image"] == {"CustomAmi": "{{resolve:ssm:/trn-kit/ami/slurm}}"}
    # The head node keeps ParallelCluster's official AMI.
    assert configuration["Image"] == {"Os": "ubuntu2404"}
    assert "Image" not in configuration["HeadNode"]
    # The same install runs; on an image built with it everything is at its pin already.
    assert queue["CustomActions"]["OnNodeStart"]["Args"] == list(
        neuron_install(ImageVersions.load()).args
    )


def test_head_node_is_private_imdsv2_encrypted_and_reached_by_ssm(template, configuration):
    head = configuration["HeadNode"]
    subnet = logical_id(template, "AWS::EC2::Subnet", "NetworkVpcComputeSubnet1")
    node_sg = logical_id(template, "AWS::EC2::SecurityGroup", "NetworkNodeSecurityGroup")
    assert head["InstanceType"] == "m7i.2xlarge"
    assert head["Networking"] == {
        "SubnetId": {"Ref": subnet},
        "AdditionalSecurityGroups": [{"Fn::GetAtt": [node_sg, "GroupId"]}],
    }
    assert head["Imds"] == {"Secured": True}
    assert configuration["Imds"] == {"ImdsSupport": "v2.0"}
    assert head["LocalStorage"]["RootVolume"]["Encrypted"] is True
    # No key pair, and SSH allowed only from an empty prefix list: port 22 is closed.
    prefix_list = logical_id(template, "AWS::EC2::PrefixList", "SlurmSshAllowList")
    assert head["Ssh"] == {"AllowedIps": {"Fn::GetAtt": [prefix_list, "PrefixListId"]}}
    template.has_resource_properties("AWS::EC2::PrefixList", {"Entries": [], "MaxEntries": 1})
    cluster_test_policy = logical_id(template, "AWS::IAM::ManagedPolicy", "SlurmClusterTestHeadNodePolicy")
    assert head["Iam"]["AdditionalIamPolicies"] == [
        {
            "Policy": {
                "Fn::Join": [
                    "",
                    [
                        "arn:",
                        {"Ref": "AWS::Partition"},
                        ":iam::aws:policy/AmazonSSMManagedInstanceCore",
                    ],
                ]
            }
        },
        # The gate's cluster all-reduce runs on the head node (nccom-test's slurm mode).
        {"Policy": {"Ref": cluster_test_policy}},
    ]


def test_head_node_keeps_quarantined_nodes_from_clustermgtd_and_gets_the_neuron_tools(configuration):
    """nccom-test's slurm mode is invoked from the head node (Neuron docs): it gets the compute
    nodes' Neuron pins, all but the driver (it has no Neuron devices), once it is configured; and
    clustermgtd keeps the nodes the burn-in drains (node/keep_quarantined_nodes.sh)."""
    (queue,) = configuration["Scheduling"]["SlurmQueues"]
    start = queue["CustomActions"]["OnNodeStart"]
    actions = configuration["HeadNode"]["CustomActions"]
    assert actions["OnNodeConfigured"] == actions["OnNodeUpdated"]
    keep, configured = actions["OnNodeConfigured"]["Sequence"]
    assert keep["Script"].endswith(".sh") and "Args" not in keep
    assert configured["Script"] == start["Script"]
    versions = ImageVersions.load()
    assert configured["Args"] == list(neuron_install(versions, driver=False).args)
    driver = start["Args"].index(f"aws-neuronx-dkms={versions.neuron_packages['aws-neuronx-dkms']}")
    runtime = start["Args"].index("--runtime-venv")  # nrtpy: only the burn-in times kernels with it
    assert configured["Args"] == start["Args"][: driver - 1] + start["Args"][driver + 1:runtime]
    debs = [configured["Args"][i + 1] for i, arg in enumerate(configured["Args"]) if arg == "--deb"]
    assert [deb.split("=")[0] for deb in debs] == [
        "aws-neuronx-runtime-lib", "aws-neuronx-collectives", "aws-neuronx-tools"
    ]


def test_bootstrap_timeouts_come_from_the_timeline(configuration):
    from trn_constructs.timeline import Budgets

    budgets = Budgets("slurm", "default", 180)
    assert configuration["DevSettings"] == {"Timeouts": {
        "HeadNodeBootstrapTimeout": budgets.head_node_bootstrap_minutes * 60,
        "ComputeNodeBootstrapTimeout": budgets.compute_node_bootstrap_minutes * 60,
    }}
    # ParallelCluster's own default is never undercut; CloudFormation's hour is never exceeded.
    assert 2100 <= configuration["DevSettings"]["Timeouts"]["ComputeNodeBootstrapTimeout"]
    assert 2100 <= configuration["DevSettings"]["Timeouts"]["HeadNodeBootstrapTimeout"] <= 55 * 60


def test_queue_runs_the_burn_in_when_a_node_is_configured(template, configuration):
    (queue,) = configuration["Scheduling"]["SlurmQueues"]
    assert "OnNodeStart" not in configuration["HeadNode"]["CustomActions"]
    shipper, action = queue["CustomActions"]["OnNodeConfigured"]["Sequence"]
    # Metrics start shipping first, so they flow while the burn-in runs.
    assert shipper["Script"].endswith(".py") and shipper["Args"][0] == "install"
    # The bootstrap script is a CDK asset; its arguments point it at the package and reports.
    assert action["Script"].startswith("s3://cdk-hnb659fds-assets-123456789012-us-east-2/")
    assert action["Script"].endswith(".py")
    args = action["Args"]
    assert args[args.index("--instance-type") + 1] == "trn3.48xlarge"
    assert args[args.index("--dtype") + 1] == "bf16"
    assert args[args.index("--duration") + 1] == "180"
    assert args[args.index("--min-peak-fraction") + 1] == "0.7"
    assert args[args.index("--min-median-fraction") + 1] == "0.9"
    assert args.index("--") < args.index("--instance-type")
    assert "--slurm" in args[:args.index("--")]  # hold the node, burn in in the background
    burn_in_policy = logical_id(template, "AWS::IAM::ManagedPolicy", "SlurmBurnInNodePolicy")
    telemetry_policy = logical_id(template, "AWS::IAM::ManagedPolicy", "TelemetryNodePolicy")
    assert queue["Iam"]["AdditionalIamPolicies"] == [
        {"Policy": {"Ref": burn_in_policy}}, {"Policy": {"Ref": telemetry_policy}}
    ]
    # Read-only access to the asset bucket holding the bootstrap script.
    assert [access["EnableWriteAccess"] for access in queue["Iam"]["S3Access"]] == [False]


def test_the_per_core_thresholds_are_settings_the_nodes_receive():
    template = synth(burnInMinPeakFraction="0.65", burnInMinMedianFraction=0.85).template
    (action,) = [a for a in cluster_resource(template)["Properties"]["ClusterConfiguration"]["Scheduling"]
                 ["SlurmQueues"][0]["CustomActions"]["OnNodeConfigured"]["Sequence"] if a["Args"][0] != "install"]
    args = action["Args"]
    run = cli.build_parser().parse_args(["run", *args[args.index("--") + 1:]])
    assert (run.min_peak_fraction, run.min_median_fraction) == (0.65, 0.85)
    assert run.catalog_overrides["trn3-gen1"]["instanceType"] == "trn3.48xlarge"


def test_fsx_logs_and_tags(template, configuration):
    file_system = logical_id(template, "AWS::FSx::FileSystem", "StorageFileSystem")
    assert configuration["SharedStorage"] == [
        {
            "Name": "fsx",
            "StorageType": "FsxLustre",
            "MountDir": "/fsx",
            "FsxLustreSettings": {"FileSystemId": {"Ref": file_system}},
        }
    ]
    assert configuration["Monitoring"] == {
        "Logs": {"CloudWatch": {"Enabled": True, "RetentionInDays": 90}}
    }
    assert configuration["Tags"] == [{"Key": "project", "Value": "trn-cluster"}]
    assert configuration["Region"] == "us-east-2"


def test_cluster_waits_for_network_routes_and_the_file_system(template):
    depends_on = cluster_resource(template)["DependsOn"]
    assert logical_id(template, "AWS::FSx::FileSystem", "StorageFileSystem") in depends_on
    route = logical_id(template, "AWS::EC2::Route", "NetworkVpcComputeSubnet1DefaultRoute")
    assert route in depends_on
    assert any(d.startswith("NetworkVpcSsmMessages") for d in depends_on)


def test_outputs_name_the_cluster_and_how_to_connect(template):
    cluster = logical_id(template, "Custom::PclusterCluster", "SlurmCluster")
    provider = logical_id(template, "AWS::CloudFormation::Stack", "SlurmProvider")
    head_node = {"Fn::GetAtt": [cluster, "headNode.instanceId"]}
    template.has_output("SlurmClusterName", {"Value": "TrnClusterStack-slurm"})
    template.has_output("SlurmHeadNodeInstanceId", {"Value": head_node})
    # A shell as the cluster's default user, who exists on every node: jobs it submits run on the
    # compute nodes. Session Manager's ssm-user exists only on the head node.
    template.has_output(
        "SlurmConnectCommand",
        {
            "Value": {
                "Fn::Join": [
                    "",
                    [
                        "aws ssm start-session --target ",
                        head_node,
                        " --region us-east-2 --document-name AWS-StartInteractiveCommand "
                        '--parameters command="sudo su - ubuntu"',
                    ],
                ]
            }
        },
    )
    template.has_output(
        "SlurmNodeLogGroupPrefix", {"Value": "/aws/parallelcluster/TrnClusterStack-slurm"}
    )
    template.has_output(
        "SlurmProviderLogGroupArn", {"Value": {"Fn::GetAtt": [provider, "Outputs.LogGroupArn"]}}
    )
    outputs = template.to_json()["Outputs"]
    assert all(outputs[name]["Description"] for name in outputs if name.startswith("Slurm"))


def test_extra_policies_reach_the_nodes_and_the_provider_may_attach_them():
    synthesized = synth(slurmAdditionalPolicyArns=[POLICY])
    template = synthesized.template
    configuration = cluster_resource(template)["Properties"]["ClusterConfiguration"]
    (queue,) = configuration["Scheduling"]["SlurmQueues"]
    burn_in_policy = {"Ref": logical_id(template, "AWS::IAM::ManagedPolicy", "SlurmBurnInNodePolicy")}
    telemetry_policy = {
        "Ref": logical_id(template, "AWS::IAM::ManagedPolicy", "TelemetryNodePolicy")
    }
    cluster_test_policy = {
        "Ref": logical_id(template, "AWS::IAM::ManagedPolicy", "SlurmClusterTestHeadNodePolicy")
    }
    assert queue["Iam"]["AdditionalIamPolicies"] == [
        {"Policy": POLICY}, {"Policy": burn_in_policy}, {"Policy": telemetry_policy}
    ]
    assert {"Policy": POLICY} in configuration["HeadNode"]["Iam"]["AdditionalIamPolicies"]
    attach = logical_id(template, "AWS::IAM::ManagedPolicy", "SlurmProviderAttachNodePolicies")
    template.has_resource_properties(
        "AWS::CloudFormation::Stack", {"Parameters": {"AdditionalIamPolicies": {"Ref": attach}}}
    )
    template.has_resource_properties(
        "AWS::IAM::ManagedPolicy",
        {
            "PolicyDocument": {
                "Statement": [
                    {
                        "Action": ["iam:AttachRolePolicy", "iam:DetachRolePolicy"],
                        "Effect": "Allow",
                        "Condition": {
                            "ArnEquals": {
                                "iam:PolicyARN": [
                                    POLICY, cluster_test_policy, burn_in_policy, telemetry_policy
                                ]
                            }
                        },
                        "Resource": "arn:aws:iam::123456789012:role/parallelcluster/*",
                    }
                ]
            }
        },
    )
    report = synthesized.validation_report()
    assert [v for plugin in report["pluginReports"] for v in plugin["violations"]] == []


def test_a_custom_provider_role_replaces_the_attach_policy():
    template = synth(slurmAdditionalPolicyArns=[POLICY], slurmProviderLambdaRoleArn=ROLE).template
    template.has_resource_properties(
        "AWS::CloudFormation::Stack", {"Parameters": {"CustomLambdaRole": ROLE}}
    )
    assert not template.find_resources(
        "AWS::IAM::ManagedPolicy",
        {"Properties": {"Description": Match.string_like_regexp("provider attach")}},
    )
    assert [
        logical for logical in template.to_json()["Resources"]
        if logical.startswith("SlurmProviderAttachNodePolicies")
    ] == []


def test_an_imported_vpc_passes_its_subnet_id_through():
    configuration = cluster_resource(synth_variant("imported-vpc").template)["Properties"][
        "ClusterConfiguration"
    ]
    assert configuration["HeadNode"]["Networking"]["SubnetId"] == "subnet-0a1b2c3d4e5f60718"
    (queue,) = configuration["Scheduling"]["SlurmQueues"]
    assert queue["Networking"]["SubnetIds"] == ["subnet-0a1b2c3d4e5f60718"]


def test_a_reservation_known_only_at_deploy_time_flows_into_the_queue(monkeypatch):
    # A block the kit buys itself has its id only at deploy time: the capacity seam carries a token.
    existing = CapacityTarget.existing
    monkeypatch.setattr(
        CapacityTarget,
        "existing",
        lambda capacity, az: replace(
            existing(capacity, az), reservation_id=Fn.import_value("PurchasedBlockId")
        ),
    )
    stack = TrnClusterInfraStack(App(), "Probe", config=parse_config(context_with({})), cluster_stack_name="Probe")
    properties = cluster_resource(Template.from_stack(stack))["Properties"]
    (queue,) = properties["ClusterConfiguration"]["Scheduling"]["SlurmQueues"]
    (resource,) = queue["ComputeResources"]
    assert resource["CapacityReservationTarget"] == {
        "CapacityReservationId": {"Fn::ImportValue": "PurchasedBlockId"}
    }
