"""Every Kubernetes manifest the EKS stack applies, validated offline against the Kubernetes OpenAPI
schema of the pinned cluster version (kubernetes-validate ships per-version JSON schemas)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from tests.conftest import synth
from tests.support.manifests import TOKEN_VALUES, applied_manifests, bundled_plan
from trn_constructs.settings import EKS_KUBERNETES_VERSIONS
from trn_constructs.eks.manifests import FSX_CSI_DRIVER, shared_storage_manifests

@pytest.fixture(scope="module", params=EKS_KUBERNETES_VERSIONS)
def stack_for_version(request):
    fsx_gib = 4800
    synthesized = synth(
        orchestrator="eks", eksKubernetesVersion=request.param, fsxStorageCapacityGiB=fsx_gib
    )
    return request.param, fsx_gib, synthesized.template_json, synthesized.outdir


def test_the_schema_package_covers_every_allowed_kubernetes_version():
    # validate() silently falls back to an older schema for an unknown version; require exact ones.
    available = {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}
    assert set(EKS_KUBERNETES_VERSIONS) <= available


def test_every_applied_manifest_is_valid_for_the_pinned_version(stack_for_version):
    version, _, template_json, _ = stack_for_version
    applied = applied_manifests(template_json)
    assert applied, "the stack applies manifests"
    kinds = []
    for manifests, _ in applied:
        for manifest in manifests:
            used = kubernetes_validate.validate(manifest, version, strict=True)
            assert used == version
            kinds.append(manifest["kind"])
    assert sorted(kinds) == [
        "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "ConfigMap", "DaemonSet",
        "DaemonSet", "Namespace", "PersistentVolume", "PersistentVolumeClaim", "Role", "RoleBinding",
        "ServiceAccount", "ServiceAccount", "ServiceAccount",
    ]


def test_the_cluster_test_job_the_handover_creates_is_valid_for_the_pinned_version(stack_for_version):
    from trn_constructs.handover.handler.kubernetes import render_job

    version, _, _, outdir = stack_for_version
    template = bundled_plan(outdir)["kubernetes"]["job"]
    job = render_job(template, {"run_id": "deploy-0123", "nodes": "4", "not_after": "2026-12-10T12:25:00Z",
                                "bucket": "trnclusterstackinfra-burninreports-0123"}, 4)
    assert kubernetes_validate.validate(job, version, strict=True) == version
    assert job["metadata"]["name"] == "trn-kit-allreduce-deploy-0123"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (4, 4)
    assert "{{" not in json.dumps(job)


def test_no_pod_of_the_kit_asks_for_the_neuron_scheduler_extension(stack_for_version):
    # The Neuron chart's scheduler extension is off (its kube-scheduler v1.31 is outside the skew
    # of a 1.34/1.35 control plane): every pod the kit applies uses the default scheduler.
    _, _, template_json, _ = stack_for_version
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
    _, fsx_gib, template_json, _ = stack_for_version
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
    _, _, template_json, _ = stack_for_version
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
