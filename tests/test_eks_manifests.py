"""Every Kubernetes manifest the EKS stack applies, validated offline against the Kubernetes OpenAPI
schema of the pinned cluster version (kubernetes-validate ships per-version JSON schemas)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from tests.conftest import synth
from trn_constructs.config import EKS_KUBERNETES_VERSIONS
from trn_constructs.eks.manifests import FSX_CSI_DRIVER, shared_storage_manifests

# What deploy-time tokens in a manifest resolve to, realistic enough for the schema's formats.
TOKEN_VALUES = {
    "Ref": "fs-0123456789abcdef0",
    "DNSName": "fs-0123456789abcdef0.fsx.us-east-2.amazonaws.com",
    "LustreMountName": "abcdef12",
    # The handover gate's first stage: how many nodes passed, and the run's name.
    "PassedNodes": "4",
    "RunId": "0123456789ab",
    "ClusterTestNotAfter": "2026-12-01T12:25:00Z",
}


def resolved(value: Any, tokens: list[dict] | None = None) -> Any:
    """``value`` with its CloudFormation tokens resolved as TOKEN_VALUES say; each token met is
    added to ``tokens``."""
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(resolved(part, tokens) for part in parts)
    if tokens is not None:
        tokens.append(value)
    if "Fn::GetAtt" in value:
        return TOKEN_VALUES[value["Fn::GetAtt"][1]]
    # File system ids and bucket names alike: a realistic name for any other reference.
    return TOKEN_VALUES["Ref"]


def applied_manifests(template_json: dict) -> list[tuple[list[dict], list[dict]]]:
    """(manifests, tokens they reference) for every KubernetesManifest in the template."""
    applied = []
    for resource in template_json["Resources"].values():
        if resource["Type"] != "Custom::AWSCDK-EKS-KubernetesResource":
            continue
        manifest = resource["Properties"]["Manifest"]
        tokens: list[dict] = []
        applied.append((json.loads(resolved(manifest, tokens)), tokens))
    return applied


@pytest.fixture(scope="module", params=EKS_KUBERNETES_VERSIONS)
def stack_for_version(request):
    fsx_gib = 4800
    synthesized = synth(
        orchestrator="eks", eksKubernetesVersion=request.param, fsxStorageCapacityGiB=fsx_gib
    )
    return request.param, fsx_gib, synthesized.template_json


def test_the_schema_package_covers_every_allowed_kubernetes_version():
    # validate() silently falls back to an older schema for an unknown version; require exact ones.
    available = {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}
    assert set(EKS_KUBERNETES_VERSIONS) <= available


def test_every_applied_manifest_is_valid_for_the_pinned_version(stack_for_version):
    version, _, template_json = stack_for_version
    applied = applied_manifests(template_json)
    assert applied, "the stack applies manifests"
    kinds = []
    for manifests, _ in applied:
        for manifest in manifests:
            used = kubernetes_validate.validate(manifest, version, strict=True)
            assert used == version
            kinds.append(manifest["kind"])
    assert sorted(kinds) == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "DaemonSet", "Job",
        "Namespace", "PersistentVolume", "PersistentVolumeClaim", "ServiceAccount",
        "ServiceAccount", "ServiceAccount",
    ]


def test_no_pod_of_the_kit_asks_for_the_neuron_scheduler_extension(stack_for_version):
    # The Neuron chart's scheduler extension is off (its kube-scheduler v1.31 is outside the skew
    # of a 1.34/1.35 control plane): every pod the kit applies uses the default scheduler.
    _, _, template_json = stack_for_version
    pod_specs = [
        manifest["spec"]["template"]["spec"]
        for manifests, _ in applied_manifests(template_json)
        for manifest in manifests
        if manifest["kind"] in ("DaemonSet", "Job")
    ]
    assert pod_specs
    assert [spec.get("schedulerName") for spec in pod_specs] == [None] * len(pod_specs)


def shared_storage(template_json: dict) -> tuple[list[dict], list[dict]]:
    (found,) = [
        (manifests, tokens)
        for manifests, tokens in applied_manifests(template_json)
        if manifests[0]["kind"] == "PersistentVolume"
    ]
    return found


def test_the_volume_mounts_the_stacks_file_system(stack_for_version):
    _, fsx_gib, template_json = stack_for_version
    manifests, tokens = shared_storage(template_json)
    volume, claim = manifests
    file_system = next(
        name
        for name, resource in template_json["Resources"].items()
        if resource["Type"] == "AWS::FSx::FileSystem"
    )
    assert tokens == [
        {"Ref": file_system},
        {"Fn::GetAtt": [file_system, "DNSName"]},
        {"Fn::GetAtt": [file_system, "LustreMountName"]},
    ]
    assert volume["spec"]["csi"] == {
        "driver": FSX_CSI_DRIVER,
        "volumeHandle": TOKEN_VALUES["Ref"],
        "volumeAttributes": {
            "dnsname": TOKEN_VALUES["DNSName"],
            "mountname": TOKEN_VALUES["LustreMountName"],
        },
    }
    assert volume["spec"]["capacity"] == {"storage": f"{fsx_gib}Gi"}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    # Bound statically: the claim names the volume, neither uses a storage class.
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    assert claim["spec"]["storageClassName"] == volume["spec"]["storageClassName"] == ""
    assert claim["spec"]["resources"]["requests"]["storage"] == f"{fsx_gib}Gi"
    assert claim["spec"]["accessModes"] == volume["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_csi_driver_is_installed_before_the_volume(stack_for_version):
    _, _, template_json = stack_for_version
    resources = template_json["Resources"]
    [manifest] = [
        resource
        for name, resource in resources.items()
        if resource["Type"] == "Custom::AWSCDK-EKS-KubernetesResource"
        and name.startswith("EksClustermanifestSharedStorage")
    ]
    fsx_addon = next(
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::EKS::Addon" and r["Properties"]["AddonName"] == "aws-fsx-csi-driver"
    )
    assert fsx_addon in manifest["DependsOn"]


@pytest.mark.parametrize("version", EKS_KUBERNETES_VERSIONS)
def test_a_malformed_volume_is_rejected(version):
    # The check has teeth: the schema catches a misspelt field and a wrong type.
    volume, _ = shared_storage_manifests(
        file_system_id="fs-1", dns_name="d", mount_name="m", capacity_gib=1200
    )
    volume["spec"]["csi"]["volumeHandel"] = volume["spec"]["csi"].pop("volumeHandle")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(volume, version, strict=True)
    volume, _ = shared_storage_manifests(
        file_system_id="fs-1", dns_name="d", mount_name="m", capacity_gib=1200
    )
    volume["spec"]["accessModes"] = "ReadWriteMany"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(volume, version, strict=True)
