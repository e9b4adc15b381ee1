"""How EKS nodes run the burn-in: one pod per Trainium node, holding all its Neuron devices, that
records the verdict on the Node and lifts the burn-in taint only where the node passed; and the
cluster all-reduce, a Job across the nodes that passed, which the handover creates from the
template here."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from trn_burnin.collective import EFA_ENVIRONMENT
from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import BurnInConfig
from trn_constructs.eks.identity import associate, pod_identity_role
from trn_constructs.eks.scheduling import BURN_IN_TOLERATION, LABEL_PREFIX
from trn_constructs.findings import acknowledge, arn_finding
from trn_constructs.burn_in import BOOTSTRAP_SCRIPT, BurnInArtifacts, cluster_test_arguments

NAMESPACE = "trn-kit-burn-in"
SERVICE_ACCOUNT = "burn-in"
# The boot check's: the same Node operations, no AWS role.
BOOT_CHECK_SERVICE_ACCOUNT = "burn-in-boot-check"
# The verdict label the bootstrap sets (trn_burnin_bootstrap.LABEL_KEY); nodes carrying it are
# done, so the DaemonSet's affinity lets the controller remove the pod and free the devices. The
# boot check removes it from a rebooted node, which brings the pod back.
VERDICT_LABEL = LABEL_PREFIX + "burn-in"
# Pinned Neuron Deep Learning Container from public ECR: Python 3.12 with nki, numpy and
# aws-neuronx-tools (neuron-ls), built for trn1/trn2/trn3; no image build at deploy time.
BURN_IN_IMAGE = "public.ecr.aws/neuron/pytorch-inference-neuronx:2.9.0-neuronx-py312-sdk2.31.1-ubuntu24.04"
BOOTSTRAP_MOUNT = "/opt/trn-kit-bootstrap"
BOOTSTRAP_CONFIG_MAP = "trn-kit-burn-in-bootstrap"
PACKAGE_URL_KEY = "package-url"
# The all-reduce needs what the inference image lacks: nccom-test reaches the other pods over SSH,
# so it runs in the newest Neuron *training* container (Open MPI, openssh-server, nccom-test).
CLUSTER_TEST_IMAGE = (
    "public.ecr.aws/neuron/pytorch-training-neuronx:2.9.0-neuronx-py312-sdk2.30.0-ubuntu24.04"
)
CLUSTER_TEST_SERVICE_ACCOUNT = "cluster-test"
CLUSTER_TEST_JOB_PREFIX = "trn-kit-allreduce-"
CLUSTER_TEST_LABELS = {"app.kubernetes.io/name": "trn-kit-cluster-test"}
# The Kubernetes group of the handover's functions (their EKS access entries name it).
HANDOVER_GROUP = "trn-kit:handover"


BOOTSTRAP_VOLUME = {"name": "bootstrap", "configMap": {"name": BOOTSTRAP_CONFIG_MAP}}
BOOTSTRAP_VOLUME_MOUNT = {"name": "bootstrap", "mountPath": BOOTSTRAP_MOUNT}
# The pause process becomes PID 1: our process then gets SIGTERM when the pod goes (PID 1 ignores
# it, so the pod would hold its devices for the whole grace period), and orphans are reaped.
SIGNALS_REACH_THE_CONTAINER = {"shareProcessNamespace": True}


def burn_in_manifests(
    *,
    artifacts_arguments: list[str],
    capacity: CapacityTarget,
    bootstrap_source: str,
    package_url: str,
) -> list[dict[str, Any]]:
    """Namespace, service accounts, the node-only RBAC, the bootstrap, the burn-in DaemonSet and
    the boot check DaemonSet."""
    labels = {"app.kubernetes.io/name": "trn-kit-burn-in"}
    instance_label = {LABEL_PREFIX + "instance-type": capacity.instance_type}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        *(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": NAMESPACE},
            }
            for name in (SERVICE_ACCOUNT, BOOT_CHECK_SERVICE_ACCOUNT)
        ),
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
                {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}
                for name in (SERVICE_ACCOUNT, BOOT_CHECK_SERVICE_ACCOUNT)
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": BOOTSTRAP_CONFIG_MAP, "namespace": NAMESPACE},
            # The package's URL changes with every byte of trn_burnin; the cluster-test Job
            # reads it from here so that its (immutable) pod template does not.
            "data": {BOOTSTRAP_SCRIPT.name: bootstrap_source, PACKAGE_URL_KEY: package_url},
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
                        **SIGNALS_REACH_THE_CONTAINER,
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
                            "volumeMounts": [BOOTSTRAP_VOLUME_MOUNT],
                        }],
                        "volumes": [BOOTSTRAP_VOLUME],
                    },
                },
            },
        },
        boot_check_daemon_set(instance_label),
    ]  # fmt: skip


def boot_check_daemon_set(instance_label: dict[str, str]) -> dict[str, Any]:
    """One small pod on every Trainium node that, each time the node boots, forgets a burn-in
    verdict of an earlier boot (trn_burnin_bootstrap --check-boot).

    EKS auto repair replaces a node whose Neuron hardware failed (a new Node: it registers with
    the taint and no verdict) but may reboot one for other reasons; so may anyone. A rebooted
    instance keeps its Node object, labels and taints, so a node that passed would take work
    untested and one that failed would stay quarantined untested. The kubelet restarts this
    pod's container after a reboot; the check then taints the node again and removes the verdict,
    and the burn-in DaemonSet runs on it again. A check that cannot reach the API exits non-zero,
    and the kubelet retries it. It holds no devices and has no AWS role.
    """
    labels = {"app.kubernetes.io/name": "trn-kit-burn-in-boot-check"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "trn-kit-burn-in-boot-check", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **SIGNALS_REACH_THE_CONTAINER,
                    "serviceAccountName": BOOT_CHECK_SERVICE_ACCOUNT,
                    "nodeSelector": instance_label,
                    "tolerations": [BURN_IN_TOLERATION],
                    "containers": [{
                        "name": "boot-check",
                        # The burn-in's image: already on the node, and it has Python.
                        "image": BURN_IN_IMAGE,
                        "command": [
                            "/bin/sh", "-c",
                            f'python3 {BOOTSTRAP_MOUNT}/{BOOTSTRAP_SCRIPT.name} "$@" && exec sleep infinity',
                            "boot-check",
                        ],
                        "args": ["--kubernetes-node", "$(NODE_NAME)", "--check-boot"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"allowPrivilegeEscalation": False},
                        "volumeMounts": [BOOTSTRAP_VOLUME_MOUNT],
                    }],
                    "volumes": [BOOTSTRAP_VOLUME],
                },
            },
        },
    }  # fmt: skip


def service_account_role(
    scope: Construct,
    cluster: eks.ICluster,
    service_account: str,
    description: str,
    statements: list[iam.PolicyStatement],
) -> tuple[iam.Role, eks.CfnPodIdentityAssociation]:
    """A role with exactly ``statements``, handed to ``service_account`` of the burn-in's
    namespace through EKS Pod Identity."""
    role = pod_identity_role(scope, "PodRole", description)
    for statement in statements:
        role.add_to_policy(statement)
    return role, associate(scope, "PodIdentity", cluster, NAMESPACE, service_account, role)


class EksBurnIn(Construct):
    """Applies the burn-in DaemonSet, the cluster test's service account and the handover's RBAC,
    with the pods' Pod Identity roles.

    Attributes:
        manifest: the applied manifest.
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
        role, association = service_account_role(
            self,
            cluster,
            SERVICE_ACCOUNT,
            "Burn-in pods: read the burn-in package, write reports and metrics",
            artifacts.node_statements(),
        )
        artifacts.acknowledge_node_policy(role)
        test_scope = Construct(self, "ClusterTest")
        test_role, test_association = service_account_role(
            test_scope,
            cluster,
            CLUSTER_TEST_SERVICE_ACCOUNT,
            "Cluster all-reduce pods: read the burn-in package, meet and report in S3",
            artifacts.cluster_test_statements(),
        )
        acknowledge(
            test_role,
            arn_finding(artifacts.bucket, f"/{artifacts.cluster_test_prefix}*"),
            "The pods of one run exchange an SSH public key and their addresses, and leave the "
            "result, under a folder named per handover",
        )
        self.manifest = cluster.add_manifest(
            "BurnIn",
            *burn_in_manifests(
                artifacts_arguments=artifacts.node_arguments(capacity, burn_in, slurm=False),
                capacity=capacity,
                bootstrap_source=BOOTSTRAP_SCRIPT.read_text(),
                package_url=artifacts.package.s3_object_url,
            ),
            cluster_test_service_account(),
            *handover_rbac(),
        )
        # Pods start only once they can get credentials and their devices are advertised.
        self.manifest.node.add_dependency(association, test_association, *after)


def cluster_test_job(*, artifacts: BurnInArtifacts, capacity: CapacityTarget, burn_in: BurnInConfig,
                     deadline_seconds: int) -> dict[str, Any]:
    """The cluster test's Indexed Job, one pod per node that passed the burn-in, each holding all
    its Neuron and EFA devices; pod 0 runs nccom-test across the others (trn_burnin.rendezvous) and
    the Job ends by itself either way. The handover fills in the ``{{...}}`` placeholders and the
    pod count (handler/kubernetes.render_job) when it creates the Job."""
    instance = capacity.instance
    region = Stack.of(artifacts).region
    bootstrap_arguments = [
        "--package", "$(PACKAGE_URL)",
        "--region", region,
        "--cluster-test",
        "--",
        "--nodes", "{{nodes}}",
        "--rendezvous", "s3://{{bucket}}/" + artifacts.cluster_test_prefix + "{{run_id}}/",
        "--index", "$(INDEX)",
        "--pod-ip", "$(POD_IP)",
        "--not-after", "{{not_after}}",
        *cluster_test_arguments(capacity, burn_in, region),
    ]  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": CLUSTER_TEST_JOB_PREFIX + "{{run_id}}", "namespace": NAMESPACE,
                     "labels": CLUSTER_TEST_LABELS},
        "spec": {
            "completionMode": "Indexed",
            "completions": 1,
            "parallelism": 1,
            # One attempt per pod, and a failed pod does not end the others (backoffLimit would):
            # pod 0 still writes the verdict that names it.
            "backoffLimitPerIndex": 0,
            # Never hold the devices past the handover's own deadline for the stage.
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": 24 * 3600,
            "template": {
                "metadata": {"labels": CLUSTER_TEST_LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    **SIGNALS_REACH_THE_CONTAINER,
                    "serviceAccountName": CLUSTER_TEST_SERVICE_ACCOUNT,
                    # Only nodes that passed: the burn-in labels them and lifts their taint.
                    "nodeSelector": {
                        LABEL_PREFIX + "instance-type": capacity.instance_type,
                        VERDICT_LABEL: "passed",
                    },
                    "affinity": {"podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [{
                            "labelSelector": {"matchLabels": CLUSTER_TEST_LABELS},
                            "topologyKey": "kubernetes.io/hostname",
                        }]
                    }},
                    "containers": [{
                        "name": "all-reduce",
                        "image": CLUSTER_TEST_IMAGE,
                        "command": ["python3", f"{BOOTSTRAP_MOUNT}/{BOOTSTRAP_SCRIPT.name}"],
                        # Kubernetes expands $(PACKAGE_URL), $(INDEX) and $(POD_IP) from the env below.
                        "args": bootstrap_arguments,
                        "env": [
                            {"name": "PACKAGE_URL", "valueFrom": {"configMapKeyRef": {
                                "name": BOOTSTRAP_CONFIG_MAP, "key": PACKAGE_URL_KEY,
                            }}},
                            {"name": "INDEX", "valueFrom": {"fieldRef": {"fieldPath": (
                                "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                            )}}},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            # For every rank, here and (through each pod's sshd) remote.
                            *({"name": name, "value": value} for name, value in EFA_ENVIRONMENT.items()),
                        ],
                        "resources": {"limits": {
                            "aws.amazon.com/neuron": str(instance.chips_per_instance),
                            # One EFA device per network card (the EFA-only interfaces).
                            "vpc.amazonaws.com/efa": str(instance.efa_network_cards),
                        }},
                        # sshd needs no more than the default capabilities.
                        "securityContext": {"allowPrivilegeEscalation": False},
                        "volumeMounts": [BOOTSTRAP_VOLUME_MOUNT],
                    }],
                    "volumes": [BOOTSTRAP_VOLUME],
                },
            },
        },
    }  # fmt: skip


def handover_rbac() -> list[dict[str, Any]]:
    """What the handover may do in the cluster, bound to its Kubernetes group (its functions' roles
    get an EKS access entry in that group): read and cordon the Trainium nodes before the block
    ends, create and read the cluster test's Job."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "trn-kit-handover"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "trn-kit-handover"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "trn-kit-handover"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": HANDOVER_GROUP}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "trn-kit-handover", "namespace": NAMESPACE},
            "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "trn-kit-handover", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trn-kit-handover"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": HANDOVER_GROUP}],
        },
    ]  # fmt: skip


def cluster_test_service_account() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": CLUSTER_TEST_SERVICE_ACCOUNT, "namespace": NAMESPACE},
    }
