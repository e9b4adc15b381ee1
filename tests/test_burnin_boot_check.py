"""EKS: a verdict holds for the boot it was reached on; a rebooted node burns in again.

EKS auto repair (with the node monitoring agent) replaces a node whose Neuron hardware failed: the
new instance is a new Node that registers with the burn-in taint and no verdict. A reboot (auto
repair's for other reasons, or anyone's) keeps the Node object with its labels and taints. The boot
check pod, restarted by the kubelet on every boot, then puts the taint back and removes the
verdict, so the burn-in DaemonSet runs again before the node takes work.

The Kubernetes API is emulated (NodeApi below) with its documented patch semantics: a JSON merge
patch (RFC 7386) for the Node, where null removes a key and a list replaces the list, and for
/status a strategic merge patch, which merges conditions by type.
"""

from __future__ import annotations

import copy

import pytest

from tests.conftest import synth
from tests.test_eks_manifests import applied_manifests
from trn_constructs.eks.scheduling import BURN_IN_TAINT_EFFECT, BURN_IN_TAINT_KEY, BURN_IN_TAINT_VALUE
from trn_constructs.eks.burn_in import (
    BOOT_CHECK_SERVICE_ACCOUNT, BURN_IN_IMAGE, NAMESPACE, SERVICE_ACCOUNT,
)
from trn_constructs.burn_in.node import trn_burnin_bootstrap as bootstrap

EARLIER_BOOT = "3b0c7a52-5d1e-4c43-9a0e-0f4c2f7d9e11"
THIS_BOOT = "8e61f0d4-2a7b-4f58-b1c3-6d2e9a4b7c05"
TAINT = {"key": BURN_IN_TAINT_KEY, "value": BURN_IN_TAINT_VALUE, "effect": BURN_IN_TAINT_EFFECT}
OTHER_CONDITIONS = [
    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"},
    {"type": "AcceleratedHardwareReady", "status": "True", "reason": "NeuronAcceleratedHardwareIsReady",
     "message": "Monitoring for the Neuron AcceleratedHardware system is active"},
]


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class NodeApi:
    """One Node behind the calls the bootstrap makes (see the module docstring)."""

    def __init__(self, *, verdict: str | None, judged_on: str | None, taints: list[dict]):
        labels = {"kubernetes.io/hostname": "ip-10-0-1-12", "trn-kit/instance-type": "trn3.48xlarge"}
        annotations = {"node.alpha.kubernetes.io/ttl": "0"}
        conditions = copy.deepcopy(OTHER_CONDITIONS)
        if verdict:
            labels[bootstrap.LABEL_KEY] = verdict
            annotations[bootstrap.REPORT_ANNOTATION] = "s3://reports/burn-in/"
            conditions.append({"type": bootstrap.CONDITION_TYPE, "status": "True" if verdict == "passed" else "False",
                               "reason": "BurnInPassed", "message": "passed"})
        if judged_on:
            annotations[bootstrap.BOOT_ANNOTATION] = judged_on
        self.node = {
            "metadata": {"name": "ip-10-0-1-12", "resourceVersion": "7", "labels": labels,
                         "annotations": annotations},
            "spec": {"taints": copy.deepcopy(taints)},
            "status": {"conditions": conditions},
        }
        self.patches: list[tuple[str, str]] = []

    def __call__(self, method, url, body=None, content_type=bootstrap.MERGE_PATCH):
        if method == "GET":
            return copy.deepcopy(self.node)
        self.patches.append((url.rsplit("/", 1)[1], content_type))
        if url.endswith("/status"):
            assert content_type == bootstrap.STRATEGIC_MERGE_PATCH
            conditions = self.node["status"]["conditions"]
            for condition in body["status"]["conditions"]:
                conditions[:] = [c for c in conditions if c["type"] != condition["type"]] + [condition]
        else:
            assert content_type == bootstrap.MERGE_PATCH
            metadata = dict(body.get("metadata", {}))
            if metadata.pop("resourceVersion", self.node["metadata"]["resourceVersion"]) != (
                self.node["metadata"]["resourceVersion"]
            ):
                raise AssertionError("409 Conflict")
            merge_patch(self.node, {**body, "metadata": metadata})
            self.node["metadata"]["resourceVersion"] = str(int(self.node["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.node)


def node_with(api: NodeApi) -> bootstrap.KubernetesNode:
    node = bootstrap.KubernetesNode.__new__(bootstrap.KubernetesNode)
    node.url = "https://kubernetes.default.svc/api/v1/nodes/ip-10-0-1-12"
    node._call = api
    return node


def condition(api: NodeApi) -> dict:
    (found,) = [c for c in api.node["status"]["conditions"] if c["type"] == bootstrap.CONDITION_TYPE]
    return found


def test_a_node_that_passed_and_rebooted_is_tainted_and_burned_in_again():
    api = NodeApi(verdict="passed", judged_on=EARLIER_BOOT, taints=[])
    outcome = node_with(api).check_boot(THIS_BOOT)
    assert outcome == (
        f"burn-in passed on boot {EARLIER_BOOT}, not on this boot ({THIS_BOOT}): tainted again until "
        "the burn-in runs again"
    )
    metadata = api.node["metadata"]
    # No verdict: the burn-in DaemonSet's affinity (label DoesNotExist) matches the node again.
    assert bootstrap.LABEL_KEY not in metadata["labels"]
    assert bootstrap.BOOT_ANNOTATION not in metadata["annotations"]
    assert metadata["labels"]["trn-kit/instance-type"] == "trn3.48xlarge"
    # Nothing without the burn-in's toleration lands on it meanwhile.
    assert api.node["spec"]["taints"] == [TAINT]
    assert condition(api) == {
        "type": bootstrap.CONDITION_TYPE, "status": "Unknown", "reason": "RebootedSinceBurnIn", "message": outcome,
    }
    # The kubelet's and the node monitoring agent's conditions stay: auto repair still sees them.
    assert [c for c in api.node["status"]["conditions"] if c["type"] != bootstrap.CONDITION_TYPE] == OTHER_CONDITIONS


def test_a_quarantined_node_that_rebooted_is_tested_again_not_returned_untested():
    other = {"key": "team", "value": "ml", "effect": "NoSchedule"}
    api = NodeApi(verdict="failed", judged_on=EARLIER_BOOT, taints=[TAINT, other])
    node_with(api).check_boot(THIS_BOOT)
    assert bootstrap.LABEL_KEY not in api.node["metadata"]["labels"]
    assert api.node["spec"]["taints"] == [TAINT, other]  # kept, not doubled


@pytest.mark.parametrize(("verdict", "judged_on", "taints", "outcome"), [
    ("passed", THIS_BOOT, [], f"burn-in passed on this boot ({THIS_BOOT})"),
    ("failed", THIS_BOOT, [TAINT], f"burn-in failed on this boot ({THIS_BOOT})"),
    (None, None, [TAINT], "no burn-in verdict yet: the burn-in runs on this boot"),
])
def test_a_verdict_of_this_boot_or_none_yet_is_left_alone(verdict, judged_on, taints, outcome):
    # A container restart without a reboot (or the node's first boot) changes nothing.
    api = NodeApi(verdict=verdict, judged_on=judged_on, taints=taints)
    before = copy.deepcopy(api.node)
    assert node_with(api).check_boot(THIS_BOOT) == outcome
    assert api.patches == []
    assert api.node == before


def test_a_verdict_without_a_boot_is_of_an_unknown_boot_and_forgotten():
    api = NodeApi(verdict="passed", judged_on=None, taints=[])
    assert "on boot unknown, not on this boot" in node_with(api).check_boot(THIS_BOOT)
    assert api.node["spec"]["taints"] == [TAINT]


def test_the_burn_in_records_the_boot_its_verdict_holds_for_and_the_next_boot_forgets_it():
    api = NodeApi(verdict=None, judged_on=None, taints=[TAINT])
    node = node_with(api)
    node.record(True, {"verdict": {"passed": True, "failures": []}}, "s3://reports/burn-in/", EARLIER_BOOT)
    assert api.node["metadata"]["annotations"][bootstrap.BOOT_ANNOTATION] == EARLIER_BOOT
    assert api.node["spec"]["taints"] == []
    assert node.check_boot(EARLIER_BOOT) == f"burn-in passed on this boot ({EARLIER_BOOT})"
    node.check_boot(THIS_BOOT)
    assert api.node["spec"]["taints"] == [TAINT]
    assert bootstrap.LABEL_KEY not in api.node["metadata"]["labels"]


def test_check_boot_reads_the_hosts_boot_id_and_prints_what_it_did(monkeypatch, tmp_path, capsys):
    boot_id = tmp_path / "boot_id"
    boot_id.write_text(THIS_BOOT + "\n")
    monkeypatch.setattr(bootstrap, "BOOT_ID", boot_id)
    api = NodeApi(verdict="passed", judged_on=EARLIER_BOOT, taints=[])
    node = node_with(api)
    monkeypatch.setattr(bootstrap, "KubernetesNode", {"ip-10-0-1-12": node}.__getitem__)
    monkeypatch.setattr(bootstrap, "fetch_package", pytest.fail)
    assert bootstrap.main(["--kubernetes-node", "ip-10-0-1-12", "--check-boot"]) == 0
    assert capsys.readouterr().out.startswith(f"burn-in passed on boot {EARLIER_BOOT}, not on this boot")


@pytest.mark.parametrize("flags", [
    ["--check-boot"],
    ["--check-boot", "--kubernetes-node", "ip-10-0-1-12", "--package", "s3://assets/pkg.zip"],
    ["--check-boot", "--kubernetes-node", "ip-10-0-1-12", "--", "--nodes", "2"],
])
def test_check_boot_takes_the_node_and_nothing_else(monkeypatch, capsys, flags):
    monkeypatch.setattr(bootstrap, "KubernetesNode", pytest.fail)
    with pytest.raises(SystemExit) as exit_info:
        bootstrap.main(flags)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(": error: --check-boot takes --kubernetes-node and nothing else\n")


# -- the boot check's pods ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def burn_in_manifests():
    (manifests,) = [
        m for m, _ in applied_manifests(synth(orchestrator="eks").template_json) if m[0]["kind"] == "Namespace"
    ]
    return manifests


def test_every_trainium_node_runs_the_boot_check_holding_no_device(burn_in_manifests):
    daemon_sets = {m["metadata"]["name"]: m for m in burn_in_manifests if m["kind"] == "DaemonSet"}
    pod = daemon_sets["trn-kit-burn-in-boot-check"]["spec"]["template"]["spec"]
    burn_in = daemon_sets["trn-kit-burn-in"]["spec"]["template"]["spec"]
    # Every Trainium node, tainted or not, verdict or not (no affinity on the verdict label).
    assert pod["nodeSelector"] == burn_in["nodeSelector"] == {"trn-kit/instance-type": "trn3.48xlarge"}
    assert pod["tolerations"] == [{"key": BURN_IN_TAINT_KEY, "operator": "Exists", "effect": BURN_IN_TAINT_EFFECT}]
    assert "affinity" not in pod
    assert pod["shareProcessNamespace"] is True
    assert pod["serviceAccountName"] == BOOT_CHECK_SERVICE_ACCOUNT
    (container,) = pod["containers"]
    assert container["image"] == BURN_IN_IMAGE
    assert "resources" not in container  # no Neuron devices, no EFA
    # A check that fails exits, and the kubelet retries it; one that succeeds sleeps until the next boot.
    assert container["command"][2].endswith('"$@" && exec sleep infinity')
    assert container["args"] == ["--kubernetes-node", "$(NODE_NAME)", "--check-boot"]
    assert container["volumeMounts"] == burn_in["containers"][0]["volumeMounts"]


def test_the_boot_check_may_do_the_burn_ins_node_operations_and_nothing_in_aws(burn_in_manifests):
    (binding,) = [m for m in burn_in_manifests if m["kind"] == "ClusterRoleBinding"
                  and m["metadata"]["name"] == "trn-kit-burn-in"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}
        for name in (SERVICE_ACCOUNT, BOOT_CHECK_SERVICE_ACCOUNT)
    ]
    associations = synth(orchestrator="eks").template.find_resources(
        "AWS::EKS::PodIdentityAssociation", {"Properties": {"ServiceAccount": BOOT_CHECK_SERVICE_ACCOUNT}}
    )
    assert associations == {}
