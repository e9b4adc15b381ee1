"""Operations: one CloudWatch dashboard per cluster and the alarms that page the operators."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from trn_constructs.capacity import CapacityTarget
from trn_constructs.operations import widgets
from trn_constructs.operations.node import ship_neuron_metrics as node
from trn_constructs.operations.telemetry import NodeTelemetry

ALARM_PERIOD = Duration.minutes(5)
NODE_ALARM = "node-left-service"


def node_alarm_name(stack_name: str) -> str:
    """The alarm the handover arms at a ready verdict and disarms before the block ends."""
    return f"{stack_name}-{NODE_ALARM}"

FREE_CAPACITY_LOW_FRACTION = 0.10
GIB = 1024**3


class Operations(Construct):
    """The cluster's dashboard and alarms; every alarm notifies ``alarm_topic`` when it fires and
    when it clears.

    Alarms: uncorrectable Neuron memory errors on any node, a Trainium node leaving service, FSx
    free capacity below 10%. The Capacity Block's end is announced by the capacity expiry warning,
    not by an alarm here.

    Attributes:
        dashboard, dashboard_name: the CloudWatch dashboard.
        alarms: the alarms by purpose ("hardware", "nodes", "storage").
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        telemetry: NodeTelemetry,
        capacity: CapacityTarget,
        burn_in_dtype: str,
        file_system_id: str,
        file_system_capacity_gib: int,
        alarm_topic: sns.ITopic,
        other_nodes: int = 0,
    ) -> None:
        """``other_nodes``: nodes besides the Trainium ones that the orchestrator's node count
        includes (the EKS system nodes)."""
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self._prefix = stack.stack_name
        self._topic = alarm_topic
        cluster = telemetry.cluster_name
        low_bytes = int(file_system_capacity_gib * GIB * FREE_CAPACITY_LOW_FRACTION)

        nodes_in_service, expected, advice = self._nodes_in_service(
            telemetry, capacity, other_nodes
        )
        self.alarms = {
            "hardware": self._alarm(
                "UncorrectableHardwareErrors",
                "uncorrectable-hardware-errors",
                telemetry.uncorrectable_ecc_events.with_(statistic="Sum", period=ALARM_PERIOD),
                threshold=1,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                missing=cloudwatch.TreatMissingData.NOT_BREACHING,
                description=(
                    "A Neuron device reported uncorrectable HBM or SRAM ECC errors. Find the "
                    "node (README: Operations), drain it and replace it; its jobs restart from "
                    "their checkpoints."
                ),
            ),
            # Its actions start disabled: before the block starts, and after its end, the cluster
            # has no Trainium nodes by design. The handover enables them when it hands the cluster
            # over and disables them at EC2's expiration warning.
            "nodes": self._alarm(
                "NodeLeftService",
                NODE_ALARM,
                nodes_in_service,
                threshold=expected - 0.5,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                missing=cloudwatch.TreatMissingData.BREACHING,
                evaluation_periods=2,
                description=(f"Fewer than {expected} nodes in service for 10 minutes. {advice} Armed by the "
                             "handover's ready verdict, disarmed at the Capacity Block's expiration warning."),
                actions_enabled=False,
            ),
            "storage": self._alarm(
                "FileSystemFreeCapacityLow",
                "fsx-free-capacity-low",
                widgets.free_capacity(file_system_id),
                threshold=low_bytes,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                missing=cloudwatch.TreatMissingData.NOT_BREACHING,
                description=(
                    f"FSx for Lustre has less than {FREE_CAPACITY_LOW_FRACTION:.0%} of "
                    f"{file_system_capacity_gib} GiB free. Delete old checkpoints or raise "
                    "fsxStorageCapacityGiB (in 2400 GiB steps) and deploy."
                ),
            ),
        }

        self.dashboard_name = f"{self._prefix}-operations"
        peak = capacity.instance.peak_tflops_per_chip(burn_in_dtype)
        eks = telemetry.orchestrator == "eks"
        node_widgets = [widgets.nodes([nodes_in_service], expected, 12 if eks else 24)]
        if eks:
            node_widgets.append(widgets.problem_detector())
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=self.dashboard_name,
            default_interval=Duration.hours(3),
            widgets=[
                [
                    cloudwatch.TextWidget(
                        markdown=self._overview(telemetry, capacity), width=8, height=widgets.HEIGHT
                    ),
                    widgets.burn_in_throughput(cluster, burn_in_dtype, peak),
                    widgets.burn_in_verdicts(cluster),
                ],
                [
                    widgets.neuroncore_utilization(cluster),
                    widgets.hardware_errors(cluster, telemetry.uncorrectable_ecc_events),
                ],
                node_widgets,
                [
                    widgets.efa_traffic(cluster),
                    widgets.fsx_throughput(file_system_id),
                    widgets.fsx_free_capacity(file_system_id, low_bytes),
                ],
                [
                    cloudwatch.AlarmStatusWidget(
                        title="Alarms", alarms=list(self.alarms.values()), width=24, height=3
                    )
                ],
            ],
        )
        self._add_outputs(stack.region)

    def _nodes_in_service(
        self, telemetry: NodeTelemetry, capacity: CapacityTarget, other_nodes: int
    ) -> tuple[cloudwatch.IMetric, int, str]:
        """What counts nodes in service, how many there should be, and what to do when fewer are."""
        cluster = telemetry.cluster_name
        if telemetry.orchestrator == "eks":
            # Container Insights counts every node of the cluster, system nodes included.
            count = widgets.cluster_metric(
                "cluster_node_count", cluster, "Minimum", "nodes", ALARM_PERIOD
            )
            advice = (
                "kubectl get nodes shows which is NotReady or gone; node auto repair replaces "
                "it in the Capacity Block and the new node runs the burn-in. None left: the "
                "block ended."
            )
            return count, capacity.instance_count + other_nodes, advice
        # Slurm: each node's shipper reports once per interval; reports / reports-per-period is
        # the number of nodes reporting (a node whose shipper or instance is gone stops counting).
        reports = cloudwatch.Metric(
            namespace=node.HEALTH_NAMESPACE,
            metric_name=node.NODE_REPORTING,
            dimensions_map={"ClusterName": cluster},
            statistic="Sum",
            period=ALARM_PERIOD,
        )
        per_period = int(ALARM_PERIOD.to_seconds()) // node.DEFAULT_INTERVAL_SECONDS
        count = cloudwatch.MathExpression(
            expression=f"FILL(reports, 0) / {per_period}",
            using_metrics={"reports": reports},
            label="Trainium nodes reporting",
            period=ALARM_PERIOD,
        )
        advice = (
            "sinfo -N -p trainium shows which node is down; one that is up but silent has a "
            "stopped trn-kit-neuron-metrics service. ParallelCluster replaces failed static nodes "
            "in the Capacity Block. None left: the block ended."
        )
        return count, capacity.instance_count, advice

    def _alarm(
        self,
        construct_id: str,
        name: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
        missing: cloudwatch.TreatMissingData,
        description: str,
        evaluation_periods: int = 1,
        actions_enabled: bool = True,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=f"{self._prefix}-{name}",
            actions_enabled=actions_enabled,
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            treat_missing_data=missing,
        )
        alarm.add_alarm_action(actions.SnsAction(self._topic))
        alarm.add_ok_action(actions.SnsAction(self._topic))
        return alarm

    @staticmethod
    def _overview(telemetry: NodeTelemetry, capacity: CapacityTarget) -> str:
        """Who this cluster is, and how to see the Capacity Block's end: no metric carries it."""
        region = Stack.of(telemetry).region
        return "\n".join([
            f"## {telemetry.cluster_name}",
            f"{capacity.instance_count} x {capacity.instance_type} ({telemetry.orchestrator}), "
            f"Capacity Block `{capacity.reservation_id}`.",
            "",
            "**Time remaining** in the block (instances stop 30 minutes before its end):",
            "```",
            f"aws ec2 describe-capacity-reservations --region {region} "
            f"--capacity-reservation-ids {capacity.reservation_id} "
            "--query 'CapacityReservations[0].EndDate'",
            "```",
            "EC2 sends an EventBridge warning before the end; the cluster's alert topic relays it.",
        ])  # fmt: skip

    def _add_outputs(self, region: str) -> None:
        name = self.dashboard_name
        outputs = {
            "OperationsDashboardName": (name, "CloudWatch dashboard of the cluster"),
            "OperationsDashboardUrl": (
                f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
                f"#dashboards/dashboard/{name}",
                "The cluster's dashboard: burn-in, NeuronCores, hardware errors, nodes, EFA, FSx",
            ),
        }
        for output_id, (value, description) in outputs.items():
            CfnOutput(Stack.of(self), output_id, value=value, description=description)
