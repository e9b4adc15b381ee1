"""The metrics and widgets of the operations dashboard, built from names only (no resources)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from trn_burnin.publish import DEFAULT_NAMESPACE as BURN_IN_NAMESPACE
from trn_constructs.eks.orchestrator import NEURON_HEALTH_METRICS_NAMESPACE
from trn_constructs.operations.node import ship_neuron_metrics as node

MINUTE = Duration.minutes(1)
# Burn-in metrics are written once, when a node starts; their panels look back this far.
BURN_IN_LOOKBACK = "-P30D"
BURN_IN_PERIOD = Duration.days(1)
HEIGHT = 6


def cluster_metric(
    name: str, cluster_name: str, statistic: str, label: str, period: Duration = MINUTE
) -> cloudwatch.Metric:
    """A Container Insights metric over the whole cluster (dimension ClusterName only)."""
    return cloudwatch.Metric(
        namespace=node.CONTAINER_INSIGHTS_NAMESPACE,
        metric_name=name,
        dimensions_map={"ClusterName": cluster_name},
        statistic=statistic,
        period=period,
        label=label,
    )


def search(query: str, statistic: str, period: Duration) -> cloudwatch.MathExpression:
    """Every series matching a CloudWatch search ``query``, one line each (labelled by their
    dimensions); for series that only exist once the cluster runs (instances, devices).
    ``{Namespace,Dim,...}`` in a query matches series with exactly those dimensions."""
    expression = f"SEARCH('{query}', '{statistic}', {int(period.to_seconds())})"
    return cloudwatch.MathExpression(expression=expression, period=period)


def per_node(name: str, cluster_name: str, statistic: str) -> cloudwatch.MathExpression:
    return search(
        f"{{{node.CONTAINER_INSIGHTS_NAMESPACE},ClusterName,InstanceId,NodeName}} "
        f'MetricName="{name}" ClusterName="{cluster_name}"',
        statistic,
        MINUTE,
    )


def graph(title: str, left: list, width: int, **options) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=left, width=width, height=HEIGHT, **options)


def burn_in_throughput(cluster_name: str, dtype: str, peak_tflops: float) -> cloudwatch.GraphWidget:
    """Each chip's burn-in throughput as a share of the catalog's dense peak for the dtype."""
    chips = search(
        f"{{{BURN_IN_NAMESPACE},ClusterName,DType,Device,InstanceId,InstanceType}} "
        f'MetricName="ChipTFLOPS" ClusterName="{cluster_name}" DType="{dtype}"',
        "Maximum",
        BURN_IN_PERIOD,
    )
    percent = cloudwatch.MathExpression(
        expression=f"100 * chips / {peak_tflops:g}",
        using_metrics={"chips": chips},
        period=BURN_IN_PERIOD,
    )
    return graph(
        f"Burn-in: chip {dtype} throughput, % of peak ({peak_tflops:.0f} TFLOPS per chip)",
        [percent],
        10,
        view=cloudwatch.GraphWidgetView.BAR,
        set_period_to_time_range=True,
        start=BURN_IN_LOOKBACK,
        left_y_axis=cloudwatch.YAxisProps(min=0, max=100, label="% of peak", show_units=False),
    )


def burn_in_verdicts(cluster_name: str) -> cloudwatch.GraphWidget:
    verdicts = search(
        f"{{{BURN_IN_NAMESPACE},ClusterName,InstanceId,InstanceType}} "
        f'MetricName="NodePassed" ClusterName="{cluster_name}"',
        "Minimum",
        BURN_IN_PERIOD,
    )
    return graph(
        "Burn-in: node verdict (1 passed, 0 failed)",
        [verdicts],
        6,
        view=cloudwatch.GraphWidgetView.BAR,
        set_period_to_time_range=True,
        start=BURN_IN_LOOKBACK,
        left_y_axis=cloudwatch.YAxisProps(min=0, max=1, show_units=False),
    )


def neuroncore_utilization(cluster_name: str) -> cloudwatch.GraphWidget:
    name = node.NEURONCORE_UTILIZATION
    return graph(
        "NeuronCore utilisation (%): cluster average and each node",
        [
            cluster_metric(name, cluster_name, "Average", "cluster"),
            per_node(name, cluster_name, "Average"),
        ],
        12,
        left_y_axis=cloudwatch.YAxisProps(min=0, max=100, show_units=False),
    )


def hardware_errors(cluster_name: str, uncorrectable: cloudwatch.IMetric) -> cloudwatch.GraphWidget:
    five = Duration.minutes(5)
    return graph(
        "Neuron hardware and execution errors (count per 5 minutes)",
        [
            uncorrectable.with_(statistic="Sum", period=five, label="uncorrectable ECC (devices)"),
            cluster_metric(node.ECC_EVENTS, cluster_name, "Sum", "ECC, all kinds", five),
            cluster_metric(node.EXECUTION_ERRORS, cluster_name, "Sum", "execution errors", five),
        ],
        12,
        left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
    )


def problem_detector() -> cloudwatch.GraphWidget:
    """Whatever the Neuron node problem detector publishes: its metric names are the detector's."""
    return graph(
        "Neuron node problem detector (NeuronHealthCheck)",
        # Every metric of the namespace, whatever its dimensions.
        [search(f'Namespace="{NEURON_HEALTH_METRICS_NAMESPACE}"', "Maximum", Duration.minutes(5))],
        12,
    )


def nodes(metrics: list[cloudwatch.IMetric], expected: int, width: int) -> cloudwatch.GraphWidget:
    return graph(
        "Nodes in service",
        metrics,
        width,
        left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
        left_annotations=[cloudwatch.HorizontalAnnotation(value=expected, label="expected")],
    )


def efa_traffic(cluster_name: str) -> cloudwatch.GraphWidget:
    """Cluster totals: every node (EKS: every interface) reports a per-second rate once a minute,
    so the sum over a minute is the cluster's rate."""
    series = {
        "node_efa_rx_bytes": "received",
        "node_efa_tx_bytes": "sent",
        "node_efa_rdma_read_bytes": "RDMA read",
        "node_efa_rdma_write_bytes": "RDMA write",
    }
    return graph(
        "EFA traffic, cluster total (bytes/s)",
        [cluster_metric(name, cluster_name, "Sum", label) for name, label in series.items()],
        12,
    )


def _fsx(
    name: str, file_system_id: str, statistic: str, period: Duration = MINUTE
) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/FSx",
        metric_name=name,
        dimensions_map={"FileSystemId": file_system_id},
        statistic=statistic,
        period=period,
    )


def free_capacity(file_system_id: str) -> cloudwatch.Metric:
    return _fsx("FreeDataStorageCapacity", file_system_id, "Minimum", Duration.minutes(5))


def fsx_throughput(file_system_id: str) -> cloudwatch.GraphWidget:
    rates = [
        cloudwatch.MathExpression(
            expression=f"{key} / PERIOD({key})",
            using_metrics={key: _fsx(name, file_system_id, "Sum")},
            label=label,
            period=MINUTE,
        )
        for key, name, label in (
            ("reads", "DataReadBytes", "read"),
            ("writes", "DataWriteBytes", "write"),
        )
    ]
    return graph("FSx for Lustre throughput (bytes/s)", rates, 6)


def fsx_free_capacity(file_system_id: str, low_bytes: int) -> cloudwatch.GraphWidget:
    return graph(
        "FSx for Lustre free capacity",
        [free_capacity(file_system_id).with_(label="free")],
        6,
        left_y_axis=cloudwatch.YAxisProps(min=0),
        left_annotations=[cloudwatch.HorizontalAnnotation(value=low_bytes, label="alarm")],
    )
