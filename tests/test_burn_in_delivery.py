"""How the burn-in reaches the nodes on both orchestrators (policies, the EKS DaemonSet and its
RBAC, the node bootstrap's verdict on a Kubernetes Node) and the EKS cluster test's Job, from the
template the handover creates it from to the result its pods leave for the handover."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from aws_cdk.assertions import Match

from tests.burnin.nccom_emulation import EmulatedNccomTest
from tests.burnin.rendezvous_fakes import FakeNetwork, FakeS3, FakeSsh
from tests.conftest import synth
from tests.support.manifests import applied_manifests, bundled_plan
from trn_burnin import cli
from trn_burnin.rendezvous import Clock
from trn_constructs.burn_in import CLUSTER_TEST_PREFIX, REPORTS_PREFIX
from trn_constructs.burn_in.node import trn_burnin_bootstrap as bootstrap
from trn_constructs.eks.burn_in import (
    BURN_IN_IMAGE, CLUSTER_TEST_IMAGE, CLUSTER_TEST_SERVICE_ACCOUNT, NAMESPACE, SERVICE_ACCOUNT,
)  # fmt: skip
from trn_constructs.eks.scheduling import BURN_IN_TAINT_EFFECT, BURN_IN_TAINT_KEY, BURN_IN_TAINT_VALUE
from trn_constructs.handover.handler import collective
from trn_constructs.handover.handler.kubernetes import render_job


@pytest.fixture(scope="module")
def eks():
    return synth(orchestrator="eks")


@pytest.fixture(scope="module")
def slurm():
    return synth()


def only_item(found: dict) -> tuple[str, dict]:
    assert len(found) == 1, list(found)
    return next(iter(found.items()))


# -- Slurm ------------------------------------------------------------------------------------
def test_slurm_nodes_hold_themselves_and_burn_in_in_the_background(slurm):
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
    written = [p for p in statements[1]["Resource"]["Fn::Join"][1] if isinstance(p, str)]
    # Not the cluster test's result: the head node writes that.
    assert written == [f"/{REPORTS_PREFIX}*"]
    assert statements[3]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "TrnCluster/BurnIn"}}


def test_head_node_reads_the_package_and_writes_only_the_cluster_tests_result(slurm):
    (policy_id, policy) = only_item(slurm.template.find_resources(
        "AWS::IAM::ManagedPolicy",
        {"Properties": {"Description": Match.string_like_regexp("^Slurm head node")}},
    ))
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Action"] for s in statements] == ["s3:GetObject", "s3:PutObject", "kms:GenerateDataKey"]
    assert sorted(arn.rsplit(".", 1)[1] for arn in statements[0]["Resource"]) == ["py", "zip"]
    written = [p for p in statements[1]["Resource"]["Fn::Join"][1] if isinstance(p, str)]
    assert written == [f"/{CLUSTER_TEST_PREFIX}*"]
    (cluster,) = slurm.template.find_resources("Custom::PclusterCluster").values()
    head = cluster["Properties"]["ClusterConfiguration"]["HeadNode"]
    assert {"Policy": {"Ref": policy_id}} in head["Iam"]["AdditionalIamPolicies"]
    queue = cluster["Properties"]["ClusterConfiguration"]["Scheduling"]["SlurmQueues"][0]
    assert {"Policy": {"Ref": policy_id}} not in queue["Iam"]["AdditionalIamPolicies"]


def test_no_cluster_test_no_head_node_grant():
    single = synth(instanceType="trn2.48xlarge", instanceCount=1)
    found = single.template.find_resources(
        "AWS::IAM::ManagedPolicy", {"Properties": {"Description": Match.string_like_regexp("^Slurm head node")}})
    assert found == {}


# -- EKS: the burn-in pods ---------------------------------------------------------------------
def burn_in_manifests(eks) -> list[dict]:
    (manifests,) = [m for m, _ in applied_manifests(eks.template_json) if m[0]["kind"] == "Namespace"]
    return manifests


def test_one_pod_per_trainium_node_tolerating_the_taint_and_holding_every_device(eks):
    (daemon_set,) = [m for m in burn_in_manifests(eks) if m["metadata"]["name"] == "trn-kit-burn-in"
                     and m["kind"] == "DaemonSet"]
    pod = daemon_set["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"trn-kit/instance-type": "trn3.48xlarge"}
    assert pod["shareProcessNamespace"] is True  # `sleep` is not PID 1: deleting the pod ends it at once
    assert pod["tolerations"] == [{"key": BURN_IN_TAINT_KEY, "operator": "Exists", "effect": BURN_IN_TAINT_EFFECT}]
    # Nodes with a verdict no longer match, so the controller removes the pod and frees devices.
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": bootstrap.LABEL_KEY, "operator": "DoesNotExist"}]}]
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


def test_rbac_allows_exactly_the_node_operations_and_the_handovers(eks):
    roles = {m["metadata"]["name"]: m for m in burn_in_manifests(eks) if m["kind"] in ("ClusterRole", "Role")}
    assert roles["trn-kit-burn-in"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    ]
    # The handover: read and cordon nodes, create and read the cluster test's Job; nothing else.
    handover = [m for m in burn_in_manifests(eks) if m["metadata"]["name"] == "trn-kit-handover"]
    rules = {m["kind"]: m.get("rules") for m in handover}
    assert rules["ClusterRole"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]}]
    assert rules["Role"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}]
    subjects = {m["kind"]: m["subjects"] for m in handover if "subjects" in m}
    assert subjects == {kind: [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "trn-kit:handover"}]
                        for kind in ("ClusterRoleBinding", "RoleBinding")}
    eks.template.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation", {"Namespace": NAMESPACE, "ServiceAccount": SERVICE_ACCOUNT})


def test_node_side_constants_match_the_eks_taint():
    # The bootstrap cannot import aws_cdk; these must not drift apart (the boot check puts the
    # taint back as the node group sets it).
    assert bootstrap.TAINT_KEY == BURN_IN_TAINT_KEY
    assert (bootstrap.TAINT_VALUE, bootstrap.TAINT_EFFECT) == (BURN_IN_TAINT_VALUE, BURN_IN_TAINT_EFFECT)


class FakeApi:
    """Stands in for the in-cluster API: records what the bootstrap sends."""

    def __init__(self, taints):
        self.node = {"metadata": {"resourceVersion": "42"}, "spec": {"taints": taints}}
        self.calls = []
        self.content_types = []

    def __call__(self, method, url, body=None, content_type=bootstrap.MERGE_PATCH):
        self.calls.append((method, url.rsplit("/nodes/", 1)[1], body))
        self.content_types.append(content_type)
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
    node.record(passed, report, "s3://reports/burn-in/", "0f5c3f4e-boot")
    # Node status through a strategic merge patch: it merges conditions by type and leaves the
    # kubelet's and the node monitoring agent's alone (a merge patch would replace the list).
    assert api.content_types == [bootstrap.MERGE_PATCH] * 2 + [bootstrap.STRATEGIC_MERGE_PATCH]
    return api.calls


def test_a_passing_node_loses_only_the_burn_in_taint(monkeypatch):
    calls = recorded(monkeypatch, True, {"verdict": {"passed": True, "failures": []}})
    assert [c[:2] for c in calls] == [("GET", "ip-10-0-0-1"), ("PATCH", "ip-10-0-0-1"), ("PATCH", "ip-10-0-0-1/status")]
    patch = calls[1][2]
    assert patch["metadata"]["labels"] == {bootstrap.LABEL_KEY: "passed"}
    assert patch["metadata"]["resourceVersion"] == "42"
    # The verdict holds for this boot only (the boot check forgets it after a reboot).
    assert patch["metadata"]["annotations"][bootstrap.BOOT_ANNOTATION] == "0f5c3f4e-boot"
    assert [t["key"] for t in patch["spec"]["taints"]] == ["other"]
    assert calls[2][2]["status"]["conditions"][0]["status"] == "True"


def test_a_failing_node_keeps_the_taint_and_says_why(monkeypatch):
    report = {"verdict": {"passed": False, "failures": [{"message": "core 5: 25% of peak"}]}}
    calls = recorded(monkeypatch, False, report)
    patch = calls[1][2]
    assert patch["metadata"]["labels"] == {bootstrap.LABEL_KEY: "failed"}
    assert [t["key"] for t in patch["spec"]["taints"]] == [BURN_IN_TAINT_KEY, "other"]
    assert calls[2][2]["status"]["conditions"][0] == {
        "type": bootstrap.CONDITION_TYPE, "status": "False", "reason": "BurnInFailed", "message": "core 5: 25% of peak",
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
    code = bootstrap.main(["--package", "s3://assets/pkg.zip", "--reports", "s3://reports/burn-in/",
                           "--region", "us-east-2", "--", "--instance-type", "trn2.48xlarge"])
    assert code == 1
    assert seen == {"reports": "s3://reports/burn-in/", "args": ["--instance-type", "trn2.48xlarge"]}


# -- EKS: the cluster test's Job, created by the handover ---------------------------------------
VALUES = {"run_id": "deploy-0123456789ab", "nodes": "4", "not_after": "2026-12-01T12:25:00Z",
          "bucket": "trnclusterstackinfra-burninreports-0123"}


def cluster_test_job(eks) -> dict:
    return render_job(bundled_plan(eks.outdir)["kubernetes"]["job"], VALUES, 4)


def test_eks_job_runs_one_pod_per_passed_node_with_every_device(eks):
    job = cluster_test_job(eks)
    spec = job["spec"]
    assert job["metadata"]["name"] == "trn-kit-allreduce-deploy-0123456789ab"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    # No retries, and a failing pod leaves the others running, so pod 0 can still name it; never
    # longer than the handover's own deadline for the stage.
    assert (spec["backoffLimitPerIndex"], spec["activeDeadlineSeconds"]) == (0, 1200)
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
    assert {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e} == {
        "PACKAGE_URL": {"configMapKeyRef": {"name": "trn-kit-burn-in-bootstrap", "key": "package-url"}},
        "INDEX": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}},
        "POD_IP": {"fieldRef": {"fieldPath": "status.podIP"}},
    }
    # Neuron's multi-node guide: libfabric's EFA provider with device RDMA, in every pod (each
    # pod's sshd hands it to the ranks nccom-test starts there).
    assert {e["name"]: e["value"] for e in container["env"] if "value" in e} == {
        "FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1",
    }


def test_eks_pods_fetch_the_package_then_meet_in_the_runs_folder(eks):
    job = cluster_test_job(eks)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert container["command"] == ["python3", "/opt/trn-kit-bootstrap/trn_burnin_bootstrap.py"]
    assert args[:args.index("--")] == ["--package", "$(PACKAGE_URL)", "--region", "us-east-2", "--cluster-test"]
    # The package's URL reaches the pods through the bootstrap ConfigMap, outside the Job's template.
    (config_map,) = [m for m in burn_in_manifests(eks) if m["kind"] == "ConfigMap"]
    package = config_map["data"]["package-url"]
    assert package.startswith("s3://cdk-") and package.endswith(".zip")
    assert "s3://cdk-" not in json.dumps(job)
    run = args[args.index("--") + 1:]
    assert run[:8] == [
        "--nodes", "4", "--rendezvous", f"s3://{VALUES['bucket']}/{CLUSTER_TEST_PREFIX}{VALUES['run_id']}/",
        "--index", "$(INDEX)", "--pod-ip", "$(POD_IP)",
    ]
    assert run[8:10] == ["--not-after", VALUES["not_after"]]
    assert run[run.index("--min-bus-bandwidth-fraction") + 1] == "0.25"


def test_eks_all_reduce_pods_may_only_read_the_package_and_use_their_folder(eks):
    eks.template.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation", {"Namespace": NAMESPACE, "ServiceAccount": CLUSTER_TEST_SERVICE_ACCOUNT})
    (policy,) = [p for p in eks.template.find_resources("AWS::IAM::Policy").values()
                 if "ClusterTestPodRole" in p["Properties"]["PolicyName"]]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Action"] for s in statements] == [
        "s3:GetObject", "s3:ListBucket", ["s3:GetObject", "s3:PutObject"], ["kms:Decrypt", "kms:GenerateDataKey"],
    ]
    assert statements[0]["Resource"].endswith(".zip")  # the bootstrap reaches the pods in their ConfigMap
    assert statements[1]["Condition"] == {"StringLike": {"s3:prefix": [f"{CLUSTER_TEST_PREFIX}*"]}}
    used = [part for part in statements[2]["Resource"]["Fn::Join"][1] if isinstance(part, str)]
    assert used[-1] == f"/{CLUSTER_TEST_PREFIX}*"


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


def test_the_jobs_pods_and_the_handover_agree_on_arguments_and_keys(eks, monkeypatch, tmp_path):
    # The Job the handover creates passes the bootstrap's parser and the cluster test's; its four
    # pods meet in (emulated) S3 under the run folder; the handover's stage finds and passes the
    # result pod 0 wrote, under the folder and names the handover gave the Job.
    job = cluster_test_job(eks)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    pods = job["spec"]["completions"]
    monkeypatch.setattr(cli, "DEFAULT_CLUSTER_TEST_OUTPUT", tmp_path / "result.json")
    monkeypatch.setattr(cli, "utc_now", lambda: "2026-12-01T12:00:00Z")  # 25 minutes before --not-after
    arguments = {index: pod_process_arguments(container, index, monkeypatch) for index in range(pods)}
    s3, network, nccom = FakeS3(), FakeNetwork(), EmulatedNccomTest(busbw_gibps=150.0)
    clock = Clock(sleep=lambda seconds: time.sleep(0.002))

    def pod(index: int) -> int:
        return cli.main(["cluster-test", *arguments[index]], identity=pytest.fail, clients=lambda service: s3,
                        nccom=nccom, ssh=FakeSsh(network, f"10.0.1.1{index}"), clock=clock)

    with ThreadPoolExecutor(max_workers=pods) as pool:
        codes = list(pool.map(pod, reversed(range(pods))))
    assert codes == [0] * pods and len(nccom.calls) == 1

    prefix = f"{CLUSTER_TEST_PREFIX}{VALUES['run_id']}/"
    (result_key,) = [key for bucket, key in s3.objects if key == prefix + collective.RESULT_NAME]
    document = json.loads(s3.objects[(VALUES["bucket"], result_key)])
    verdict = collective.judge(document, f"s3://{VALUES['bucket']}/{result_key}")
    assert verdict.passed and verdict.summary.startswith(f"Cluster all-reduce across {pods} nodes: ")
