"""The burn-in on EKS: one pod per Trainium node, holding all its Neuron devices, that records the
verdict on the Node and lifts the burn-in taint only where the node passed."""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import BurnInConfig
from trn_constructs.eks.orchestrator import associate, pod_identity_role
from trn_constructs.eks.scheduling import BURN_IN_TOLERATION, LABEL_PREFIX
from trn_constructs.validation import BOOTSTRAP_SCRIPT, BurnInArtifacts

NAMESPACE = "trn-kit-burn-in"
SERVICE_ACCOUNT = "burn-in"
# The verdict label the bootstrap sets (trn_burnin_bootstrap.LABEL_KEY); nodes carrying it are
# done, so the DaemonSet's affinity lets the controller remove the pod and free the devices.
VERDICT_LABEL = LABEL_PREFIX + "burn-in"
# Pinned Neuron Deep Learning Container from public ECR: Python 3.12 with nki, numpy and
# aws-neuronx-tools (neuron-ls), built for trn1/trn2/trn3; no image build at deploy time.
BURN_IN_IMAGE = "public.ecr.aws/neuron/pytorch-inference-neuronx:2.9.0-neuronx-py312-sdk2.31.1-ubuntu24.04"
BOOTSTRAP_MOUNT = "/opt/trn-kit-bootstrap"


def burn_in_manifests(
    *, artifacts_arguments: list[str], capacity: CapacityTarget, bootstrap_source: str
) -> list[dict[str, Any]]:
    """Namespace, service account, the node-only RBAC, the bootstrap and the DaemonSet."""
    labels = {"app.kubernetes.io/name": "trn-kit-burn-in"}
    instance_label = {LABEL_PREFIX + "instance-type": capacity.instance_type}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "trn-kit-burn-in"},
            # Exactly what trn_burnin_bootstrap.KubernetesNode does: read its Node, patch labels,
            # annotations and taints, and set one status condition.
            "rules": [
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
                {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "trn-kit-burn-in"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "trn-kit-burn-in",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "trn-kit-burn-in-bootstrap", "namespace": NAMESPACE},
            "data": {BOOTSTRAP_SCRIPT.name: bootstrap_source},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "trn-kit-burn-in", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "nodeSelector": instance_label,
                        "affinity": {"nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": [
                                    {"key": VERDICT_LABEL, "operator": "DoesNotExist"}
                                ]}]
                            }
                        }},
                        "tolerations": [BURN_IN_TOLERATION],
                        "containers": [{
                            "name": "burn-in",
                            "image": BURN_IN_IMAGE,
                            # Once the verdict is on the Node the DaemonSet controller removes
                            # this pod; until then it must not exit and run the burn-in again.
                            # Arguments travel as "$@" (no shell quoting); Kubernetes expands
                            # $(NODE_NAME) from the env below.
                            "command": [
                                "/bin/sh", "-c",
                                f'python3 {BOOTSTRAP_MOUNT}/{BOOTSTRAP_SCRIPT.name} "$@"; '
                                "exec sleep infinity",
                                "burn-in",
                            ],
                            "args": ["--kubernetes-node", "$(NODE_NAME)", *artifacts_arguments],
                            "env": [{
                                "name": "NODE_NAME",
                                "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                            }],
                            "resources": {
                                "limits": {
                                    "aws.amazon.com/neuron": str(capacity.instance.chips_per_instance)
                                }
                            },
                            # dmesg (NEURON_HW_ERR lines) needs CAP_SYSLOG, nothing more.
                            "securityContext": {
                                "capabilities": {"add": ["SYSLOG"]},
                                "allowPrivilegeEscalation": False,
                            },
                            "volumeMounts": [{"name": "bootstrap", "mountPath": BOOTSTRAP_MOUNT}],
                        }],
                        "volumes": [{
                            "name": "bootstrap",
                            "configMap": {"name": "trn-kit-burn-in-bootstrap"},
                        }],
                    },
                },
            },
        },
    ]  # fmt: skip


class EksBurnIn(Construct):
    """Applies the burn-in DaemonSet with its Pod Identity role.

    Attributes:
        manifest: the applied manifest; the handover gate depends on it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        artifacts: BurnInArtifacts,
        capacity: CapacityTarget,
        burn_in: BurnInConfig,
        after: list[Construct],
    ) -> None:
        super().__init__(scope, construct_id)
        role = pod_identity_role(
            self, "PodRole", "Burn-in pods: read the burn-in package, write reports and metrics"
        )
        for statement in artifacts.node_statements(cluster_test=False):
            role.add_to_policy(statement)
        artifacts.acknowledge_node_policy(role, cluster_test=False)
        association = associate(self, "PodIdentity", cluster, NAMESPACE, SERVICE_ACCOUNT, role)
        self.manifest = cluster.add_manifest(
            "BurnIn",
            *burn_in_manifests(
                artifacts_arguments=artifacts.node_arguments(capacity, burn_in, slurm=False),
                capacity=capacity,
                bootstrap_source=BOOTSTRAP_SCRIPT.read_text(),
            ),
        )
        # Pods start only once they can get credentials and their devices are advertised.
        self.manifest.node.add_dependency(association, *after)
