"""The handover gate's wiring on both orchestrators, and the node bootstrap's verdict recording."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from aws_cdk.assertions import Match

from tests.burnin.nccom_emulation import EmulatedNccomTest
from tests.burnin.rendezvous_fakes import FakeNetwork, FakeS3, FakeSsh
from tests.conftest import synth
from tests.test_eks_manifests import applied_manifests, resolved
from trn_burnin import cli
from trn_constructs.eks.scheduling import BURN_IN_TAINT_EFFECT, BURN_IN_TAINT_KEY
from trn_constructs.slurm.cluster_config import QUEUE_NAME
from trn_burnin.rendezvous import HOSTS_DIR, LAUNCHER_KEY_NAME, RESULT_NAME, Clock
from trn_constructs.validation import CLUSTER_TEST_PREFIX, NODE_LAUNCHER, REPORTS_PREFIX
from trn_constructs.validation.eks import (
    BURN_IN_IMAGE, CLUSTER_TEST_IMAGE, CLUSTER_TEST_SERVICE_ACCOUNT, NAMESPACE, SERVICE_ACCOUNT,
)
from trn_constructs.validation.handler import index as gate_handler
from trn_constructs.validation.node import trn_burnin_bootstrap as bootstrap


@pytest.fixture(scope="module")
def eks():
    return synth(orchestrator="eks")


@pytest.fixture(scope="module")
def slurm():
    return synth(orchestrator="slurm", burnInMinHealthyFraction=0.75, burnInTimeoutMinutes=30)


def gate_of(synthesized, stage: str | None = None) -> tuple[str, dict]:
    """The gate resource of ``stage`` (None: the first, which judges the nodes)."""
    (found,) = [
        (name, resource)
        for name, resource in synthesized.template_json["Resources"].items()
        if resource["Type"] == "Custom::TrnBurnInGate"
        and resource["Properties"].get("Stage") == stage
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


def test_the_longest_timeout_still_fits_cloudformations_hour():
    _, gate = gate_of(synth(orchestrator="slurm", burnInTimeoutMinutes=55))
    assert gate["Properties"]["ServiceTimeout"] == "3600"
    assert gate["Properties"]["TimeoutSeconds"] == "3300"


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
                    Match.object_like({
                        "Action": ["ec2:DescribeInstances", "ssm:GetCommandInvocation"],
                        "Resource": "*",
                    }),
                    # The reports' key: reading them, and writing the cluster test's marker.
                    Match.object_like({"Action": ["kms:Decrypt", "kms:GenerateDataKey"]}),
                    Match.object_like({"Action": "ssm:SendCommand"}),
                    Match.object_like({
                        "Action": "s3:ListBucket",
                        "Condition": {"StringLike": {"s3:prefix": [f"{CLUSTER_TEST_PREFIX}*"]}},
                    }),
                    Match.object_like({"Action": ["s3:GetObject", "s3:PutObject"]}),
                ]
            },
        },
    )


def test_gate_runs_the_cluster_test_through_the_slurm_head_node(slurm):
    _, gate = gate_of(slurm)
    (cluster,) = slurm.template.find_resources("Custom::PclusterCluster")
    test = gate["Properties"]["ClusterTest"]
    assert test["HeadNodeInstanceId"] == {"Fn::GetAtt": [cluster, "headNode.instanceId"]}
    assert test["Partition"] == QUEUE_NAME
    overrides = {"trn3-gen1": {
        "instance_type": "trn3.48xlarge", "ultraserver_type": "u-trn3x64", "efa_network_cards": 16,
    }}
    assert test["Command"] == [
        NODE_LAUNCHER, "cluster-test", "--instance-type", "trn3.48xlarge",
        "--catalog-overrides", json.dumps(overrides, separators=(",", ":")),
        "--min-bus-bandwidth-fraction", "0.25", "--region", "us-east-2",
    ]
    assert test["Prefix"] == CLUSTER_TEST_PREFIX
    # Stage 1 stops 10 minutes early so the all-reduce always has that long.
    assert test["ReserveSeconds"] == "600"
    assert "ClusterTestSkipped" not in gate["Properties"]


def test_gate_may_send_commands_only_to_the_head_node_and_only_run_shell(slurm):
    (policy,) = slurm.template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"PolicyName": Match.string_like_regexp("^HandoverGateIsComplete")}}
    ).values()
    (send,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Action"] == "ssm:SendCommand"]
    (cluster,) = slurm.template.find_resources("Custom::PclusterCluster")
    assert send["Resource"] == [
        "arn:aws:ssm:us-east-2::document/AWS-RunShellScript",
        {"Fn::Join": ["", ["arn:aws:ec2:us-east-2:123456789012:instance/",
                           {"Fn::GetAtt": [cluster, "headNode.instanceId"]}]]},
    ]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"orchestrator": "eks", "clusterTest": "false"}, "clusterTest is false"),
        ({"orchestrator": "slurm", "clusterTest": "false"}, "clusterTest is false"),
        (
            {"orchestrator": "slurm", "instanceType": "trn2.48xlarge", "instanceCount": 1},
            "a single node has no inter-node path to test",
        ),
    ],
)
def test_gate_says_why_the_cluster_test_does_not_run(overrides, reason):
    synthesized = synth(**overrides)
    _, gate = gate_of(synthesized)
    assert gate["Properties"]["ClusterTestSkipped"] == reason
    assert "ClusterTest" not in gate["Properties"]
    assert "ClusterTestRunsNext" not in gate["Properties"]
    # Nothing else runs the all-reduce: no second gate resource, no Job.
    assert len(synthesized.template.find_resources("Custom::TrnBurnInGate")) == 1
    assert not [m for m, _ in applied_manifests(synthesized.template_json)
                if any(part["kind"] == "Job" for part in m)]


def test_slurm_nodes_drain_themselves_on_failure(slurm):
    (cluster,) = slurm.template.find_resources("Custom::PclusterCluster").values()
    queue = cluster["Properties"]["ClusterConfiguration"]["Scheduling"]["SlurmQueues"][0]
    burn_in = queue["CustomActions"]["OnNodeConfigured"]["Sequence"][-1]
    args = burn_in["Args"]
    assert args[args.index("--") - 1] == "--slurm"
    # Burn-in metrics carry the cluster's name, which the dashboard filters on.
    assert args[args.index("--cluster-name") + 1] == cluster["Properties"]["ClusterName"]


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
    assert [s["Action"] for s in statements] == [
        "s3:GetObject", "s3:PutObject", "kms:GenerateDataKey", "cloudwatch:PutMetricData"
    ]
    written = [part for resource in statements[1]["Resource"] for part in resource["Fn::Join"][1]]
    assert [p for p in written if isinstance(p, str)] == [f"/{REPORTS_PREFIX}*", f"/{CLUSTER_TEST_PREFIX}*"]
    assert statements[3]["Condition"] == {
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
    assert pod["shareProcessNamespace"] is True  # `sleep` is not PID 1: deleting the pod ends it at once
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
    # Burn-in metrics carry the EKS cluster's name, which the dashboard filters on.
    (cluster,) = eks.template.find_resources("AWS::EKS::Cluster").values()
    assert container["args"][container["args"].index("--cluster-name") + 1] == cluster["Properties"]["Name"]


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


# -- the cluster all-reduce on EKS ---------------------------------------------------------------
def cluster_test_job(eks) -> tuple[dict, list[dict]]:
    ((manifests, tokens),) = [
        (m, t) for m, t in applied_manifests(eks.template_json) if any(p["kind"] == "Job" for p in m)
    ]
    (job,) = [m for m in manifests if m["kind"] == "Job"]
    return job, tokens


def test_eks_first_stage_hands_the_all_reduce_to_the_stack(eks):
    _, gate = gate_of(eks)
    # The Job's fingerprint, and how long it may run: the pods' deadline counts from stage 1's end.
    assert gate["Properties"]["ClusterTestRunsNext"] == {
        "Fingerprint": cluster_test_fingerprint_of(eks), "Seconds": "1500",
    }
    assert "ClusterTestSkipped" not in gate["Properties"]
    assert "ClusterTest" not in gate["Properties"]
    # Stage 1 has the whole burn-in budget: the all-reduce has a resource (and deadline) of its own.
    assert gate["Properties"]["TimeoutSeconds"] == "2700"


def cluster_test_fingerprint_of(synthesized) -> str:
    _, gate = gate_of(synthesized)
    return gate["Properties"]["ClusterTestRunsNext"]["Fingerprint"]


@pytest.mark.parametrize("change", [
    {"clusterTestMinBusBandwidthFraction": 0.5},  # in the pods' arguments
    {"instanceType": "trn2.48xlarge"},  # in the pods' node selector and device counts
])
def test_a_changed_job_runs_the_first_stage_again_under_a_new_name(eks, change):
    # A Job's pod template is immutable: the first stage re-runs (new RunId, new Job) instead.
    # A new burn-in package alone does not (its URL is outside the template), nor re-test nodes.
    fingerprint = cluster_test_fingerprint_of(eks)
    assert re.fullmatch("[0-9a-f]{16}", fingerprint)
    # Stable: a second synthesis (the default fraction, spelt out) gives the same fingerprint.
    assert cluster_test_fingerprint_of(synth(orchestrator="eks", clusterTestMinBusBandwidthFraction=0.25)) == fingerprint
    assert cluster_test_fingerprint_of(synth(orchestrator="eks", **change)) != fingerprint


def test_eks_job_runs_one_pod_per_passed_node_with_every_device(eks):
    gate, _ = gate_of(eks)
    job, tokens = cluster_test_job(eks)
    assert {"Fn::GetAtt": [gate, "PassedNodes"]} in tokens
    assert {"Fn::GetAtt": [gate, "RunId"]} in tokens
    assert {"Fn::GetAtt": [gate, "ClusterTestNotAfter"]} in tokens
    spec = job["spec"]
    assert job["metadata"]["name"] == "trn-kit-allreduce-0123456789ab"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    # No retries, and a failing pod leaves the others running, so pod 0 can still name it.
    assert (spec["backoffLimitPerIndex"], spec["activeDeadlineSeconds"]) == (0, 1500)
    assert "backoffLimit" not in spec
    pod = spec["template"]["spec"]
    assert pod["shareProcessNamespace"] is True  # our process is not PID 1, so SIGTERM ends it
    assert pod["nodeSelector"] == {"trn-kit/instance-type": "trn3.48xlarge", bootstrap.LABEL_KEY: "passed"}
    assert "tolerations" not in pod  # a node still under the burn-in taint is not a candidate
    (anti_affinity,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti_affinity["topologyKey"] == "kubernetes.io/hostname"
    assert pod["serviceAccountName"] == CLUSTER_TEST_SERVICE_ACCOUNT
    (container,) = pod["containers"]
    assert container["image"] == CLUSTER_TEST_IMAGE
    assert container["resources"]["limits"] == {"aws.amazon.com/neuron": "16", "vpc.amazonaws.com/efa": "16"}
    assert {e["name"]: e["valueFrom"] for e in container["env"]} == {
        "PACKAGE_URL": {"configMapKeyRef": {"name": "trn-kit-burn-in-bootstrap", "key": "package-url"}},
        "INDEX": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}},
        "POD_IP": {"fieldRef": {"fieldPath": "status.podIP"}},
    }


def test_eks_pods_fetch_the_package_then_meet_in_the_runs_folder(eks):
    job, _ = cluster_test_job(eks)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert container["command"] == ["python3", "/opt/trn-kit-bootstrap/trn_burnin_bootstrap.py"]
    assert args[:args.index("--")] == ["--package", "$(PACKAGE_URL)", "--region", "us-east-2", "--cluster-test"]
    # The package's URL reaches the pods through the bootstrap ConfigMap, outside the Job's template.
    (config_map,) = [m for m in burn_in_manifests(eks) if m["kind"] == "ConfigMap"]
    package = config_map["data"]["package-url"]
    assert package.startswith("s3://cdk-") and package.endswith(".zip")
    assert "s3://cdk-" not in json.dumps(job)  # so a new package changes neither the Job nor its name
    run = args[args.index("--") + 1:]
    overrides = {"trn3-gen1": {
        "instance_type": "trn3.48xlarge", "ultraserver_type": "u-trn3x64", "efa_network_cards": 16,
    }}
    assert run == [
        "--nodes", "4",
        "--rendezvous", f"s3://fs-0123456789abcdef0/{CLUSTER_TEST_PREFIX}0123456789ab/",
        "--index", "$(INDEX)", "--pod-ip", "$(POD_IP)", "--not-after", "2026-12-01T12:25:00Z",
        "--instance-type", "trn3.48xlarge", "--catalog-overrides", json.dumps(overrides, separators=(",", ":")),
        "--min-bus-bandwidth-fraction", "0.25", "--region", "us-east-2",
    ]


def test_eks_second_stage_waits_for_the_jobs_result(eks):
    gate, _ = gate_of(eks)
    name, stage = gate_of(eks, "cluster-test")
    properties = stage["Properties"]
    assert properties["RunPrefix"] == {
        "Fn::Join": ["", [CLUSTER_TEST_PREFIX, {"Fn::GetAtt": [gate, "RunId"]}, "/"]]
    }
    assert properties["Nodes"] == {"Fn::GetAtt": [gate, "PassedNodes"]}
    assert (properties["ResultName"], properties["HostsDir"], properties["LauncherKeyName"]) == (
        RESULT_NAME, HOSTS_DIR, LAUNCHER_KEY_NAME)
    assert (properties["Namespace"], properties["TimeoutSeconds"]) == (NAMESPACE, "1500")
    assert 1500 < int(properties["ServiceTimeout"]) <= 3600
    (job_manifest,) = [d for d in stage["DependsOn"] if d.startswith("EksClustermanifestClusterTest")]
    manifest = eks.template_json["Resources"][job_manifest]
    assert any(d.startswith("EksClustermanifestBurnIn") for d in manifest["DependsOn"])
    # The summary ends with the all-reduce's verdict.
    assert eks.template_json["Outputs"]["BurnInSummary"]["Value"] == {
        "Fn::Join": [". ", [{"Fn::GetAtt": [gate, "Summary"]}, {"Fn::GetAtt": [name, "Summary"]}]]
    }


def test_eks_all_reduce_pods_may_only_read_the_package_and_use_their_folder(eks):
    eks.template.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation",
        {"Namespace": NAMESPACE, "ServiceAccount": CLUSTER_TEST_SERVICE_ACCOUNT},
    )
    (policy,) = [
        p for p in eks.template.find_resources("AWS::IAM::Policy").values()
        if p["Properties"]["PolicyName"].startswith("EksClusterTestPodRole")
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Action"] for s in statements] == [
        "s3:GetObject", "s3:ListBucket", ["s3:GetObject", "s3:PutObject"],
        ["kms:Decrypt", "kms:GenerateDataKey"],
    ]
    # The package only: the bootstrap reaches the pods in their ConfigMap.
    assert statements[0]["Resource"].endswith(".zip")
    assert statements[1]["Condition"] == {"StringLike": {"s3:prefix": [f"{CLUSTER_TEST_PREFIX}*"]}}
    used = [part for part in statements[2]["Resource"]["Fn::Join"][1] if isinstance(part, str)]
    assert used[-1] == f"/{CLUSTER_TEST_PREFIX}*"


def test_eks_second_stage_may_list_and_read_the_run_folder_and_nothing_more(eks):
    (policy,) = [
        p for p in eks.template.find_resources("AWS::IAM::Policy").values()
        if p["Properties"]["PolicyName"].startswith("HandoverGateIsComplete")
    ]
    granted = set()
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        if statement["Action"] == "s3:ListBucket":
            (prefix,) = statement["Condition"]["StringLike"]["s3:prefix"]
            granted.add(("s3:ListBucket", prefix))
        elif statement["Action"] == "s3:GetObject":
            for resource in statement["Resource"]:
                granted.add(("s3:GetObject", resource["Fn::Join"][1][-1]))
        elif statement["Action"] == "kms:Decrypt":
            granted.add(("kms:Decrypt", statement["Resource"]["Fn::GetAtt"][0]))
        else:
            granted.add((statement["Action"], statement["Resource"]))
    assert granted == {
        ("s3:ListBucket", f"{REPORTS_PREFIX}*"), ("s3:GetObject", f"/{REPORTS_PREFIX}*"),
        ("s3:ListBucket", f"{CLUSTER_TEST_PREFIX}*"), ("s3:GetObject", f"/{CLUSTER_TEST_PREFIX}*"),
        ("ec2:DescribeInstances", "*"), ("kms:Decrypt", "BurnInReportsKey53086CAB"),
    }


# -- the EKS all-reduce end to end, in EMULATION (S3, SSH and nccom-test are the fakes of tests/burnin) --
class BecameClusterTest(Exception):
    """Stands in for the bootstrap's execv: carries the arguments the pod's process would get."""


def pod_process_arguments(container: dict, index: int, monkeypatch) -> list[str]:
    """What the bootstrap in pod ``index`` hands the cluster test, given the Job's own arguments."""
    expanded = {"$(PACKAGE_URL)": "s3://cdk-assets/package.zip", "$(INDEX)": str(index), "$(POD_IP)": f"10.0.1.1{index}"}
    fetched = []
    monkeypatch.setattr(bootstrap, "fetch_package", lambda uri, region: fetched.append((uri, region)))

    def become(arguments):
        raise BecameClusterTest(arguments)

    monkeypatch.setattr(bootstrap, "exec_cluster_test", become)
    with pytest.raises(BecameClusterTest) as became:
        bootstrap.main([expanded.get(argument, argument) for argument in container["args"]])
    assert fetched == [("s3://cdk-assets/package.zip", "us-east-2")]
    return became.value.args[0]


def test_eks_job_pods_and_second_stage_agree_on_arguments_and_keys(eks, monkeypatch, tmp_path):
    # The synthesized Job's arguments pass the bootstrap's parser and the cluster test's; its four
    # pods meet in (emulated) S3 under the run folder; the second gate stage finds and passes the
    # result pod 0 wrote, with the bucket, folder and names the stack gave it.
    job, _ = cluster_test_job(eks)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    pods = job["spec"]["completions"]
    monkeypatch.setattr(cli, "DEFAULT_CLUSTER_TEST_OUTPUT", tmp_path / "result.json")
    # The pods start 25 minutes before the --not-after that test_eks_manifests.TOKEN_VALUES gives them.
    monkeypatch.setattr(cli, "utc_now", lambda: "2026-12-01T12:00:00Z")
    arguments = {index: pod_process_arguments(container, index, monkeypatch) for index in range(pods)}
    s3, network, nccom = FakeS3(), FakeNetwork(), EmulatedNccomTest(busbw_gibps=150.0)
    clock = Clock(sleep=lambda seconds: time.sleep(0.002))

    def pod(index: int) -> int:
        return cli.main(["cluster-test", *arguments[index]], identity=pytest.fail, clients=lambda service: s3,
                        nccom=nccom, ssh=FakeSsh(network, f"10.0.1.1{index}"), clock=clock)

    with ThreadPoolExecutor(max_workers=pods) as pool:
        codes = list(pool.map(pod, reversed(range(pods))))
    assert codes == [0] * pods and len(nccom.calls) == 1

    _, stage = gate_of(eks, "cluster-test")
    properties = {key: resolved(value) for key, value in stage["Properties"].items() if key != "ServiceToken"}
    monkeypatch.setattr(gate_handler, "client", lambda service: s3)
    outcome = gate_handler.is_complete({
        "RequestType": "Create", "RequestId": "stage-two", "ResourceProperties": properties,
        "Data": {"Deadline": "2999-01-01T00:00:00+00:00"},
    })
    assert outcome["IsComplete"] is True
    assert outcome["Data"]["Summary"].startswith(f"Cluster all-reduce across {pods} nodes: ")
    folder = properties["RunPrefix"]
    assert {key for _, key in s3.objects} == {
        folder + properties["LauncherKeyName"], folder + properties["ResultName"],
        *(f"{folder}{properties['HostsDir']}{index}.json" for index in range(1, pods)),
    }
