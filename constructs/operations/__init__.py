"""Operations: node telemetry, one CloudWatch dashboard per cluster, and alarms to an SNS topic.

``NodeTelemetry`` (created before the orchestrator) owns Container Insights' log groups and, on
Slurm, the node-side shipper that writes neuron-monitor metrics under Container Insights' names;
``Operations`` (created after) builds the dashboard and the alarms from those names.
"""

from trn_constructs.operations.operations import Operations
from trn_constructs.operations.telemetry import NodeTelemetry

__all__ = ["NodeTelemetry", "Operations"]
