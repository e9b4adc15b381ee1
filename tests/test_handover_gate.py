"""The handover gate's wiring on both orchestrators, and the node bootstrap's verdict recording."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from tests.conftest import synth
from tests.test_eks_manifests import applied_manifests
from trn_constructs.eks.scheduling import BURN_IN_TAINT_EFFECT, BURN_IN_TAINT_KEY
from trn_constructs.validation import REPORTS_PREFIX
from trn_constructs.validation.eks import BURN_IN_IMAGE, NAMESPACE, SERVICE_ACCOUNT
from trn_constructs.validation.node import trn_burnin_bootstrap as bootstrap


@pytest.fixture(scope="module")
def eks():
    return synth(orchestrator="eks")


@pytest.fixture(scope="module")
def slurm():
    return synth(orchestrator="slurm", burnInMinHealthyFraction=0.75, burnInTimeoutMinutes=30)


def gate_of(synthesized) -> tuple[str, dict]:
    (found,) = [
        (name, resource)
        for name, resource in synthesized.template_json["Resources"].items()
        if resource["Type"] == "Custom::TrnBurnInGate"
    ]
    return found


def test_gate_properties_come_from_capacity_and_policy(slurm):
    _, gate = gate_of(slurm)
    properties = gate["Properties"]
    assert properties["CapacityReservationId"] == "cr-0123456789abcdef0"
    assert properties["ExpectedNodes"] == "4"
    assert properties["MinHealthyFraction"] == "0.75"
    assert properties["TimeoutSeconds"] == "1800"
    assert properties["ReportsPrefix"] == REPORTS_PREFIX
    # CloudFormation's own wait (max 3600 s) outlasts the gate's deadline plus the poll margin.
    assert 1800 < int(properties["ServiceTimeout"]) <= 3600


def test_gate_waits_for_the_slurm_cluster(slurm):
    _, gate = gate_of(slurm)
    (cluster,) = slurm.template.find_resources("Custom::PclusterCluster")
    assert cluster in gate["DependsOn"]


def test_gate_waits_for_the_eks_burn_in_pods(eks):
    _, gate = gate_of(eks)
    assert any(name.startswith("EksClustermanifestBurnIn") for name in gate["DependsOn"])


def test_gate_handlers_poll_on_a_schedule_and_read_only_what_they_need(slurm):
    template = slurm.template
    template.has_resource_properties(
        "AWS::Lambda::Function", {"Handler": "index.is_complete", "Runtime": "python3.14"}
    )
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyName": Match.string_like_regexp("^HandoverGateIsComplete"),
            "PolicyDocument": {
                "Statement": [
                    Match.object_like({
                        "Action": "s3:ListBucket",
                        "Condition": {"StringLike": {"s3:prefix": [f"{REPORTS_PREFIX}*"]}},
                    }),
                    Match.object_like({"Action": "s3:GetObject"}),
                    Match.object_like({"Action": "ec2:DescribeInstances", "Resource": "*"}),
                ]
            },
        },
    )


def test_reports_bucket_is_private_encrypted_ssl_only_and_kept(slurm):
    template = slurm.template
    template.has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like({
                "VersioningConfiguration": {"Status": "Enabled"},
                "PublicAccessBlockConfiguration": Match.object_like({"BlockPublicAcls": True}),
            }),
        },
    )
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {"PolicyDocument": {"Statement": [Match.object_like({
            "Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}
        })]}},
    )


def test_node_policy_writes_reports_and_metrics_only(slurm):
    (policy,) = slurm.template.find_resources(
        "AWS::IAM::ManagedPolicy",
        {"Properties": {"Description": Match.string_like_regexp("^Trainium nodes")}},
    ).values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Action"] for s in statements] == ["s3:GetObject", "s3:PutObject", "cloudwatch:PutMetricData"]
    assert statements[2]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "TrnCluster/BurnIn"}
    }


def test_outputs_summarise_the_handover(slurm):
    outputs = slurm.template_json["Outputs"]
    for name in ("BurnInSummary", "BurnInReports"):
        assert outputs[name]["Description"]
    assert outputs["BurnInSummary"]["Value"]["Fn::GetAtt"][1] == "Summary"


def burn_in_manifests(eks) -> list[dict]:
    (manifests,) = [m for m, _ in applied_manifests(eks.template_json) if m[0]["kind"] == "Namespace"]
    return manifests


def test_one_pod_per_trainium_node_tolerating_the_taint_and_holding_every_device(eks):
    (daemon_set,) = [m for m in burn_in_manifests(eks) if m["kind"] == "DaemonSet"]
    pod = daemon_set["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"trn-kit/instance-type": "trn3.48xlarge"}
    assert pod["tolerations"] == [
        {"key": BURN_IN_TAINT_KEY, "operator": "Exists", "effect": BURN_IN_TAINT_EFFECT}
    ]
    # Nodes with a verdict no longer match, so the controller removes the pod and frees devices.
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": bootstrap.LABEL_KEY, "operator": "DoesNotExist"}
        ]}]
    }
    (container,) = pod["containers"]
    assert container["image"] == BURN_IN_IMAGE
    assert container["resources"]["limits"] == {"aws.amazon.com/neuron": "16"}
    assert container["securityContext"]["capabilities"] == {"add": ["SYSLOG"]}
    assert container["args"][:2] == ["--kubernetes-node", "$(NODE_NAME)"]
    assert container["args"][container["args"].index("--instance-type") + 1] == "trn3.48xlarge"


def test_rbac_allows_exactly_the_node_operations(eks):
    (role,) = [m for m in burn_in_manifests(eks) if m["kind"] == "ClusterRole"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    ]
    eks.template.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation", {"Namespace": NAMESPACE, "ServiceAccount": SERVICE_ACCOUNT}
    )


def test_node_side_constants_match_the_eks_taint():
    # The bootstrap cannot import aws_cdk; these two must not drift apart.
    assert bootstrap.TAINT_KEY == BURN_IN_TAINT_KEY


class FakeApi:
    """Stands in for the in-cluster API: records what the bootstrap sends."""

    def __init__(self, taints):
        self.node = {
            "metadata": {"resourceVersion": "42"},
            "spec": {"taints": taints},
        }
        self.calls = []

    def __call__(self, method, url, body=None):
        self.calls.append((method, url.rsplit("/nodes/", 1)[1], body))
        return self.node


def recorded(monkeypatch, passed: bool, report: dict | None) -> list:
    taints = [
        {"key": BURN_IN_TAINT_KEY, "value": "pending", "effect": "NoSchedule"},
        {"key": "other", "value": "x", "effect": "NoSchedule"},
    ]
    api = FakeApi(taints)
    node = bootstrap.KubernetesNode.__new__(bootstrap.KubernetesNode)
    node.url = "https://kubernetes.default.svc/api/v1/nodes/ip-10-0-0-1"
    monkeypatch.setattr(node, "_call", api)
    node.record(passed, report, "s3://reports/burn-in/")
    return api.calls


def test_a_passing_node_loses_only_the_burn_in_taint(monkeypatch):
    calls = recorded(monkeypatch, True, {"verdict": {"passed": True, "failures": []}})
    assert [c[:2] for c in calls] == [
        ("GET", "ip-10-0-0-1"), ("PATCH", "ip-10-0-0-1"), ("PATCH", "ip-10-0-0-1/status")
    ]
    patch = calls[1][2]
    assert patch["metadata"]["labels"] == {bootstrap.LABEL_KEY: "passed"}
    assert patch["metadata"]["resourceVersion"] == "42"
    assert [t["key"] for t in patch["spec"]["taints"]] == ["other"]
    assert calls[2][2]["status"]["conditions"][0]["status"] == "True"


def test_a_failing_node_keeps_the_taint_and_says_why(monkeypatch):
    report = {"verdict": {"passed": False, "failures": [{"message": "core 5: 25% of peak"}]}}
    calls = recorded(monkeypatch, False, report)
    patch = calls[1][2]
    assert patch["metadata"]["labels"] == {bootstrap.LABEL_KEY: "failed"}
    assert [t["key"] for t in patch["spec"]["taints"]] == [BURN_IN_TAINT_KEY, "other"]
    condition = calls[2][2]["status"]["conditions"][0]
    assert condition == {
        "type": bootstrap.CONDITION_TYPE,
        "status": "False",
        "reason": "BurnInFailed",
        "message": "core 5: 25% of peak",
    }


def test_bootstrap_passes_the_burn_in_exit_code_through(monkeypatch, tmp_path):
    monkeypatch.setattr(bootstrap, "INSTALL_DIR", tmp_path)
    monkeypatch.setattr(bootstrap, "fetch_package", lambda uri, region: None)
    seen = {}

    def run(reports, region, args, report_path):
        seen.update(reports=reports, args=args)
        report_path.write_text(json.dumps({"verdict": {"passed": False, "failures": []}}))
        return 1

    monkeypatch.setattr(bootstrap, "run_burnin", run)
    code = bootstrap.main([
        "--package", "s3://assets/pkg.zip", "--reports", "s3://reports/burn-in/",
        "--region", "us-east-2", "--", "--instance-type", "trn2.48xlarge",
    ])
    assert code == 1
    assert seen == {"reports": "s3://reports/burn-in/", "args": ["--instance-type", "trn2.48xlarge"]}
