"""EKS Trainium nodes from a custom image (`orchestrator=eks` with `imageSsmParameter`): the launch
template carries the image and the nodeadm bootstrap EKS adds only to its own AMI types."""

from __future__ import annotations

import base64
import email
import json

import pytest
import yaml
from cfnlint.api import ManualArgs, lint

from tests.conftest import CDK_CONTEXT, VARIANTS, synth
from tests.test_eks_orchestrator import only, trainium_launch_template, trainium_nodegroup
from trn_burnin.catalog import CATALOG
from trn_constructs.eks import BURN_IN_TAINT_KEY, BURN_IN_TAINT_VALUE
from trn_constructs.eks.scheduling import trainium_node_labels

# The eks variant's block (trn3.48xlarge) is catalog entry trn3-gen1; test_eks_orchestrator pins
# the values of these labels.
LABELS = trainium_node_labels(CATALOG["trn3-gen1"])

IMAGE_PARAMETER = "/trn-kit/ami/eks"


@pytest.fixture(scope="module")
def custom_image():
    return synth(**VARIANTS["eks"], imageSsmParameter=IMAGE_PARAMETER)


@pytest.fixture(scope="module")
def template(custom_image):
    return custom_image.template


def cluster_id(template) -> str:
    return next(iter(template.find_resources("AWS::EKS::Cluster")))


def rendered(value, markers: dict[str, str]) -> str:
    """A Fn::Join of strings and intrinsics as text, each intrinsic replaced by its marker."""
    return "".join(
        part if isinstance(part, str) else markers[json.dumps(part, sort_keys=True)]
        for part in value["Fn::Join"][1]
    )


@pytest.fixture(scope="module")
def node_config(template) -> dict:
    user_data = trainium_launch_template(template)["Properties"]["LaunchTemplateData"]["UserData"]
    cluster = cluster_id(template)
    lookup = next(iter(template.find_resources("Custom::AWS")))
    markers = {
        json.dumps({"Ref": cluster}): "<cluster-name>",
        json.dumps({"Fn::GetAtt": [cluster, "Endpoint"]}): "https://<endpoint>",
        json.dumps({"Fn::GetAtt": [cluster, "CertificateAuthorityData"]}): base64.b64encode(
            b"<ca>"
        ).decode(),
        json.dumps(
            {"Fn::GetAtt": [lookup, "cluster.kubernetesNetworkConfig.serviceIpv4Cidr"]}
        ): "172.20.0.0/16",
    }
    message = email.message_from_string(rendered(user_data["Fn::Base64"], markers))
    assert message.is_multipart()
    [part] = message.get_payload()
    assert part.get_content_type() == "application/node.eks.aws"
    return yaml.safe_load(part.get_payload())


def test_launch_template_takes_the_image_from_ssm_at_deploy_time(template):
    data = trainium_launch_template(template)["Properties"]["LaunchTemplateData"]
    assert data["ImageId"] == f"{{{{resolve:ssm:{IMAGE_PARAMETER}}}}}"
    # Everything else the Capacity Block needs is unchanged.
    assert data["InstanceMarketOptions"] == {"MarketType": "capacity-block"}
    assert data["InstanceType"] == "trn3.48xlarge"


def test_nodegroup_names_no_ami_type_but_keeps_labels_and_the_burn_in_taint(template):
    nodegroup = trainium_nodegroup(template)["Properties"]
    assert "AmiType" not in nodegroup
    assert nodegroup["Labels"] == LABELS
    assert nodegroup["Taints"] == [
        {"Key": BURN_IN_TAINT_KEY, "Value": BURN_IN_TAINT_VALUE, "Effect": "NO_SCHEDULE"}
    ]


def test_system_nodegroup_keeps_the_eks_ami_type(template):
    system = only(template, "AWS::EKS::Nodegroup", {"AmiType": "AL2023_x86_64_STANDARD"})
    system_template = system["Properties"]["LaunchTemplate"]["Id"]["Ref"]
    data = template.to_json()["Resources"][system_template]["Properties"]["LaunchTemplateData"]
    assert "ImageId" not in data and "UserData" not in data


def test_user_data_joins_the_cluster_through_nodeadm(node_config):
    assert node_config["apiVersion"] == "node.eks.aws/v1alpha1"
    assert node_config["kind"] == "NodeConfig"
    assert node_config["spec"]["cluster"] == {
        "name": "<cluster-name>",
        "apiServerEndpoint": "https://<endpoint>",
        "certificateAuthority": base64.b64encode(b"<ca>").decode(),
        "cidr": "172.20.0.0/16",
    }


def test_nodes_register_labelled_and_tainted_before_any_pod_can_land(node_config):
    # EKS applies a node group's taints only once the node has joined; kubelet flags close the gap.
    flags = node_config["spec"]["kubelet"]["flags"]
    assert flags == [
        "--node-labels=" + ",".join(f"{key}={value}" for key, value in LABELS.items()),
        f"--register-with-taints={BURN_IN_TAINT_KEY}={BURN_IN_TAINT_VALUE}:NoSchedule",
    ]


def test_service_cidr_is_read_from_this_cluster_only(template):
    cluster = cluster_id(template)
    lookup = only(template, "Custom::AWS")
    call = json.loads(
        rendered(lookup["Properties"]["Create"], {json.dumps({"Ref": cluster}): "<cluster-name>"})
    )
    assert call["service"] == "EKS" and call["action"] == "describeCluster"
    assert call["parameters"] == {"name": "<cluster-name>"}
    assert call["outputPaths"] == ["cluster.kubernetesNetworkConfig.serviceIpv4Cidr"]
    [policy] = lookup["DependsOn"]
    document = template.to_json()["Resources"][policy]["Properties"]["PolicyDocument"]
    assert document["Statement"] == [
        {
            "Action": "eks:DescribeCluster",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [cluster, "Arn"]},
        }
    ]


def test_lookup_logs_are_kept_for_the_configured_retention(template):
    resources = template.to_json()["Resources"]
    function = only(template, "Custom::AWS")["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    log_group = resources[function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    retention = resources[log_group]["Properties"]["RetentionInDays"]
    assert retention == CDK_CONTEXT["logRetentionDays"]


def test_no_unacknowledged_nag_or_validation_findings(custom_image):
    report = custom_image.validation_report()
    assert [v for plugin in report["pluginReports"] for v in plugin["violations"]] == []


def test_cfn_lint_reports_no_errors(custom_image):
    for name, body in custom_image.templates().items():
        matches = lint(json.dumps(body), config=ManualArgs(regions=["us-east-2"]))
        errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]
        assert errors == [], name
