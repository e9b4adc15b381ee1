"""Where node metrics land: Container Insights' log groups, owned by the stack, and the metric that
singles out uncorrectable Neuron memory errors; on Slurm also the node-side metrics shipper."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from trn_constructs.log_groups import log_group
from trn_constructs.operations.node import ship_neuron_metrics as shipper
from trn_constructs.slurm.cluster_config import CustomAction

SHIPPER_SCRIPT = Path(shipper.__file__)
UNCORRECTABLE_ECC_METRIC = "NeuronUncorrectableEccEvents"

# Container Insights writes to these log groups, creating any that is missing with no expiry and
# leaving it behind after the cluster is gone. The stack creates them first, with the configured
# retention, and decides per purpose what `cdk destroy` does with each: telemetry goes with the
# cluster; workload logs (container output) stay until their retention ends, for post-mortems.
_EKS_LOG_GROUPS = {
    "performance": RemovalPolicy.DESTROY,  # EMF records behind the Container Insights metrics
    "host": RemovalPolicy.DESTROY,
    "dataplane": RemovalPolicy.DESTROY,
    "application": RemovalPolicy.RETAIN,
}
# Slurm nodes write only metric records (ParallelCluster keeps the node logs in its own group).
_SLURM_LOG_GROUPS = {"performance": RemovalPolicy.DESTROY}


def container_insights_log_group(cluster_name: str, kind: str) -> str:
    return f"/aws/containerinsights/{cluster_name}/{kind}"


class NodeTelemetry(Construct):
    """The stack's side of node metrics, for either orchestrator.

    Container Insights exports Neuron ECC events as one count of corrected and uncorrected events;
    its records still carry the count of each kind, so a metric filter on the performance log group
    turns records with uncorrected events into ``TrnCluster/Health NeuronUncorrectableEccEvents``.
    Slurm nodes write the same records (see ``node/ship_neuron_metrics.py``), so the filter, the
    dashboard and the alarms do not depend on the orchestrator.

    Create it before the orchestrator: Container Insights must find its log groups in place.

    Attributes:
        cluster_name: the ``ClusterName`` dimension of every node metric.
        orchestrator: "eks" or "slurm".
        log_groups: Container Insights' log groups, by kind ("performance", ...).
        uncorrectable_ecc_events: the filter's metric (dimension ClusterName).
        node_policy (Slurm only): what the shipper needs on a node.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        orchestrator: str,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.cluster_name = cluster_name
        self.orchestrator = orchestrator
        kinds = _EKS_LOG_GROUPS if orchestrator == "eks" else _SLURM_LOG_GROUPS
        self.log_groups = {
            kind: log_group(
                self,
                f"{kind.capitalize()}Logs",
                name=container_insights_log_group(cluster_name, kind),
                retention=log_retention,
                removal_policy=removal_policy,
            )
            for kind, removal_policy in kinds.items()
        }
        performance = self.log_groups["performance"]
        # Counts device records with any uncorrected event, whether the agent reports the period's
        # events or a running total: either way a node with such an error is in alarm.
        logs.MetricFilter(
            self,
            "UncorrectableEcc",
            log_group=performance,
            filter_pattern=logs.FilterPattern.any(
                *(logs.FilterPattern.number_value(f"$.{field}", ">", 0)
                  for field in shipper.UNCORRECTED_ECC_FIELDS)
            ),
            metric_namespace=shipper.HEALTH_NAMESPACE,
            metric_name=UNCORRECTABLE_ECC_METRIC,
            metric_value="1",
            dimensions={"ClusterName": "$.ClusterName"},
            unit=cloudwatch.Unit.COUNT,
        )  # fmt: skip
        self.uncorrectable_ecc_events = cloudwatch.Metric(
            namespace=shipper.HEALTH_NAMESPACE,
            metric_name=UNCORRECTABLE_ECC_METRIC,
            dimensions_map={"ClusterName": cluster_name},
        )
        if orchestrator == "slurm":
            self._add_shipper(performance)

    def _add_shipper(self, performance: logs.LogGroup) -> None:
        self.shipper = s3_assets.Asset(self, "NeuronMetricsShipper", path=str(SHIPPER_SCRIPT))
        self.node_policy = iam.ManagedPolicy(
            self,
            "NodePolicy",
            description="Slurm nodes' metrics shipper: fetch the script, send its records to logs",
            statements=[
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[self.shipper.bucket.arn_for_objects(self.shipper.s3_object_key)],
                ),
                iam.PolicyStatement(
                    actions=[
                        "logs:CreateLogStream",
                        "logs:DescribeLogStreams",
                        "logs:PutLogEvents",
                    ],
                    # The group's ARN ends in ":*", which covers its streams.
                    resources=[performance.log_group_arn],
                ),
            ],
        )

    def node_action(self) -> CustomAction:
        """The ParallelCluster node action that starts shipping (Slurm only)."""
        return CustomAction(
            script=self.shipper.s3_object_url,
            args=(
                "install",
                "--cluster-name", self.cluster_name,
                "--log-group", self.log_groups["performance"].log_group_name,
                "--region", Stack.of(self).region,
            ),
        )  # fmt: skip
