"""The Kubernetes objects and Helm values the EKS orchestrator applies, built as plain data so tests
can validate them against the Kubernetes OpenAPI schema without synthesizing a stack."""

from __future__ import annotations

from typing import Any, Iterable

from trn_constructs.eks.scheduling import BURN_IN_TOLERATION

FSX_CSI_DRIVER = "fsx.csi.aws.com"
SHARED_VOLUME_NAME = "fsx-lustre"
SHARED_CLAIM_NAMESPACE = "default"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
NPD_NAMESPACE = "neuron-healthcheck-system"
NPD_SERVICE_ACCOUNT = "node-problem-detector"

Manifest = dict[str, Any]


def shared_storage_manifests(
    *, file_system_id: str, dns_name: str, mount_name: str, capacity_gib: int
) -> list[Manifest]:
    """A PersistentVolume for the stack's existing FSx for Lustre file system and a claim bound to it.

    Static provisioning: the CSI driver only mounts, it never creates or deletes the file system,
    and the volume is retained when the claim goes away.
    """
    storage = f"{capacity_gib}Gi"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": SHARED_VOLUME_NAME},
        "spec": {
            "capacity": {"storage": storage},
            "volumeMode": "Filesystem",
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            # Empty class: binds only to the claim below, never to dynamic provisioning.
            "storageClassName": "",
            "mountOptions": ["flock"],
            "csi": {
                "driver": FSX_CSI_DRIVER,
                "volumeHandle": file_system_id,
                "volumeAttributes": {"dnsname": dns_name, "mountname": mount_name},
            },
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": SHARED_VOLUME_NAME, "namespace": SHARED_CLAIM_NAMESPACE},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": SHARED_VOLUME_NAME,
            "resources": {"requests": {"storage": storage}},
        },
    }
    return [volume, claim]


def neuron_chart_values(instance_type: str) -> dict[str, Any]:
    """Values for the Neuron Helm chart: device plugin and node problem detector with node recovery,
    restricted to the cluster's Trainium instance type; the scheduler extension off."""
    return {
        # The chart's daemons select nodes by this list; it must name the configured (possibly
        # overridden) instance type or they never run on our nodes.
        "neuronInstances": [instance_type],
        "devicePlugin": {
            "tolerations": [
                {"key": "CriticalAddonsOnly", "operator": "Exists"},
                {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"},
                # The burn-in needs the Neuron devices advertised while the node is still tainted.
                BURN_IN_TOLERATION,
            ]
        },
        # Off: chart 1.9.0 runs it as a second kube-scheduler v1.31 ("my-scheduler"), three minors
        # behind a 1.34/1.35 control plane and outside Kubernetes' version skew policy, and it
        # places only pods that set schedulerName, which no pod of the kit does (every pod takes
        # a node's devices whole). Turn it back on only with its kube-scheduler image matched to
        # the control plane (scheduler.customScheduler.image.tag).
        "scheduler": {"enabled": False},
        # The node problem detector already tolerates every NoSchedule taint.
        "npd": {"enabled": True, "nodeRecovery": {"enabled": True}},
    }


def efa_chart_values(instance_type: str) -> dict[str, Any]:
    """Values for the EFA device plugin: run on the Trainium nodes, burn-in taint or not."""
    return {
        "supportedInstanceLabels": {"keys": [INSTANCE_TYPE_LABEL], "values": [instance_type]},
        "tolerations": [BURN_IN_TOLERATION],
    }


def observability_configuration(instance_types: Iterable[str]) -> dict[str, Any]:
    """Configuration values of the CloudWatch Observability add-on: neuron-monitor, and so the
    Neuron metrics, on nodes of every one of ``instance_types``.

    The add-on runs neuron-monitor only on the instance types its ``neuronMonitor.affinity``
    lists, and chart 6.4.0's list stops at trn2u.48xlarge. Helm replaces lists, so this one is
    the whole match. The add-on's default tolerations (every taint) stay.
    """
    return {
        "neuronMonitor": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{
                            "matchExpressions": [{
                                "key": INSTANCE_TYPE_LABEL,
                                "operator": "In",
                                "values": sorted(set(instance_types)),
                            }]
                        }]
                    }
                }
            }
        }
    }  # fmt: skip
