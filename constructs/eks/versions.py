"""Every version the EKS orchestrator pins, in one place, each with the reason it was chosen.

Nothing here floats: a redeploy months later installs exactly what was tested. Check a new value
against `aws eks describe-addon-versions --kubernetes-version <k8s> --addon-name <name>` (add-ons)
or the chart's release notes (Helm charts) before changing it.
"""

from __future__ import annotations

# kubectl in the kubectl provider's Lambda layer (aws-cdk.lambda-layer-kubectl-v35): 1.35 is within
# kubectl's one-minor skew of both Kubernetes versions the kit allows (1.34 and 1.35).
KUBECTL_LAYER_VERSION = "1.35"

# Neuron Helm chart 1.9.0 (Neuron SDK 2.31.0): device plugin and scheduler extension 2.31.0.0,
# node recovery 1.11.0; the first release that also ships the UltraServer operator and DRA driver
# for Kubernetes 1.34+, so a later switch to DRA is a values change, not a chart change.
NEURON_HELM_CHART = "oci://public.ecr.aws/neuron/neuron-helm-chart"
NEURON_HELM_CHART_VERSION = "1.9.0"

# aws/eks-charts aws-efa-k8s-device-plugin v0.5.30 (plugin image v0.5.20): the first chart whose
# supported-instance list names trn2.48xlarge and trn2u.48xlarge; the kit overrides that list
# with the configured type anyway, so an uncertain trn3 name works too.
EFA_HELM_CHART_REPOSITORY = "https://aws.github.io/eks-charts"
EFA_HELM_CHART = "aws-efa-k8s-device-plugin"
EFA_HELM_CHART_VERSION = "v0.5.30"

# EKS add-ons. Add-on versions are only published through the EKS API; these are versions public
# EKS tooling records as available for Kubernetes 1.34 and 1.35.
ADDON_VERSIONS = {
    # Credentials for the add-ons and Neuron node recovery through EKS Pod Identity.
    "eks-pod-identity-agent": "v1.4.0-eksbuild.1",
    # FSx for Lustre CSI driver 1.7.0: static provisioning of the stack's file system.
    "aws-fsx-csi-driver": "v1.7.0-eksbuild.1",
    # EKS node monitoring agent 1.6.4: without it node auto repair sees only the kubelet's Ready.
    # It sets AcceleratedHardwareReady=False on the NEURON_HW_ERR kernel lines the burn-in also
    # fails a node on (DMA, HBM, NeuronCore and SRAM uncorrectable errors; auto repair's action for
    # them is Replace), and NetworkingReady, KernelReady and the like. Its chart tolerates every
    # taint, so it watches nodes under the burn-in taint too; it needs no IAM role. Public EKS
    # tooling records this build for Kubernetes 1.35.
    "eks-node-monitoring-agent": "v1.6.4-eksbuild.1",
    # Container Insights with neuron-monitor (accelerated compute metrics) and EFA metrics. Chart
    # 6.4.0 (aws-observability/helm-charts) runs neuron-monitor only on the types in its
    # neuronMonitor.affinity (no Trainium3 among them); the kit's configuration values set that
    # key (per-component affinity since the chart's #183).
    "amazon-cloudwatch-observability": "v6.4.0-eksbuild.1",
}
