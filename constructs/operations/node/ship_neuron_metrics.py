#!/usr/bin/env python3
"""Ships neuron-monitor metrics from a Slurm node to CloudWatch under Container Insights' names.

On EKS the CloudWatch Observability add-on turns neuron-monitor's reports into Container Insights
metrics. Slurm nodes have no such agent, so this script writes the same metrics, with the same
namespace, names and dimensions, as embedded-metric-format (EMF) records: one dashboard and one set
of alarms then serve both orchestrators. Standard library only.

    ship_neuron_metrics.py install --cluster-name C --log-group G --region R [--interval S]
        Run once by ParallelCluster (a node action): points the CloudWatch agent at the metrics file
        (installing the agent if the image lacks it) and starts the trn-kit-neuron-metrics service.
        It always exits 0: a node whose monitoring could not start still trains, and the
        nodes-reporting alarm names the gap.

    ship_neuron_metrics.py run --cluster-name C [--interval S] [--output PATH]
        The service: runs neuron-monitor and, for every report, appends one record per Neuron device
        (NeuronCore utilisation, ECC events by kind) and one per node (execution errors, EFA traffic
        rates, a heartbeat) to PATH, which the agent sends to the log group G. CloudWatch Logs
        extracts the metrics from the records.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

# Container Insights' namespace, metric names and dimension sets (CloudWatch agent, Neuron and EFA
# metrics of enhanced observability); the kit's dashboard reads exactly these.
CONTAINER_INSIGHTS_NAMESPACE = "ContainerInsights"
CLUSTER_DIMENSIONS = (("ClusterName",), ("ClusterName", "InstanceId", "NodeName"))
NEURONCORE_UTILIZATION = "node_neuroncore_utilization"
ECC_EVENTS = "node_neurondevice_hw_ecc_events_total"
# neuron-monitor's per-device counters; the agent names the split-out series ECC_EVENTS_<kind>.
ECC_KINDS = (
    "mem_ecc_corrected", "mem_ecc_uncorrected", "sram_ecc_corrected", "sram_ecc_uncorrected",
)
UNCORRECTED_ECC_FIELDS = tuple(
    f"{ECC_EVENTS}_{kind}" for kind in ECC_KINDS if "uncorrected" in kind
)
EXECUTION_ERRORS = "node_neuron_execution_errors_total"
# EFA driver hardware counters (sysfs name) -> Container Insights' metric (a per-second rate).
EFA_COUNTERS = {
    "rx_bytes": ("node_efa_rx_bytes", "Bytes/Second"),
    "tx_bytes": ("node_efa_tx_bytes", "Bytes/Second"),
    "rx_drops": ("node_efa_rx_dropped", "Count/Second"),
    "rdma_read_bytes": ("node_efa_rdma_read_bytes", "Bytes/Second"),
    "rdma_write_bytes": ("node_efa_rdma_write_bytes", "Bytes/Second"),
    "rdma_write_recv_bytes": ("node_efa_rdma_write_recv_bytes", "Bytes/Second"),
}
# The kit's own heartbeat: one data point per node and report, so the count of reporting nodes is
# the sum over a period divided by the reports each node makes in it.
HEALTH_NAMESPACE = "TrnCluster/Health"
NODE_REPORTING = "NodeReporting"
DEFAULT_INTERVAL_SECONDS = 60

NEURON_MONITOR = "/opt/aws/neuron/bin/neuron-monitor"
EFA_SYSFS = Path("/sys/class/infiniband")
INSTALL_DIR = Path("/opt/trn-kit")
OUTPUT = Path("/var/log/trn-kit/neuron-metrics.log")
OUTPUT_MAX_BYTES = 50 * 1024 * 1024  # one rotated copy is kept; the agent follows the rotation
SERVICE = "trn-kit-neuron-metrics"
SYSTEMD_DIR = Path("/etc/systemd/system")
AGENT_CTL = Path("/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl")
AGENT_DEB_URL = (
    "https://amazoncloudwatch-agent-{region}.s3.{region}.amazonaws.com"
    "/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb"
)
# Cluster names go into a systemd unit: letters, digits, '-' and '_' only.
CLUSTER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,99}")

Record = dict[str, Any]


# --- reports -> records ------------------------------------------------------------------------


def _healthy(group: Mapping[str, Any] | None) -> bool:
    """A neuron-monitor metric group that is present and reported no error."""
    return bool(group) and not group.get("error")


def _runtime_groups(report: Mapping[str, Any], name: str) -> Iterator[Mapping[str, Any]]:
    for runtime in report.get("neuron_runtime_data") or []:
        group = (runtime.get("report") or {}).get(name) if not runtime.get("error") else None
        if _healthy(group):
            yield group


def core_utilization(report: Mapping[str, Any]) -> dict[int, float]:
    """NeuronCore index -> utilisation (%) over every runtime; cores no runtime uses are absent."""
    cores: dict[int, float] = {}
    for group in _runtime_groups(report, "neuroncore_counters"):
        for index, counters in (group.get("neuroncores_in_use") or {}).items():
            cores[int(index)] = float(counters.get("neuroncore_utilization", 0.0))
    return cores


def execution_errors(report: Mapping[str, Any]) -> int:
    """Errors of every kind (generic, numerical, transient, model, runtime, hardware), as the
    CloudWatch agent sums them."""
    return sum(
        int(count)
        for group in _runtime_groups(report, "execution_stats")
        for count in (group.get("error_summary") or {}).values()
    )


def device_ecc(report: Mapping[str, Any]) -> dict[int, dict[str, int]]:
    """Device index -> ECC events of each kind in the report's period."""
    group = (report.get("system_data") or {}).get("neuron_hw_counters")
    if not _healthy(group):
        return {}
    return {
        int(device["neuron_device_index"]): {kind: int(device.get(kind, 0)) for kind in ECC_KINDS}
        for device in group.get("neuron_devices") or []
    }


def _emf(
    timestamp_ms: int, fields: Record, directives: Iterable[tuple[str, tuple, list]]
) -> Record:
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dimensions) for dimensions in dimension_sets],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit in metrics],
                }
                for namespace, dimension_sets, metrics in directives
            ],
        },
        **fields,
    }


def records(
    report: Mapping[str, Any],
    *,
    cluster_name: str,
    node_name: str,
    efa_rates: Mapping[str, float],
    timestamp_ms: int,
) -> list[Record]:
    """One record per Neuron device and one for the node, from one neuron-monitor report."""
    info = report.get("instance_info") or {}
    identity = {
        "ClusterName": cluster_name,
        "InstanceId": info.get("instance_id", "unknown"),
        "InstanceType": info.get("instance_type", "unknown"),
        "NodeName": node_name,
    }
    hardware = report.get("neuron_hardware_info") or {}
    cores_per_device = int(hardware.get("neuroncore_per_device_count") or 0)
    ecc = device_ecc(report)
    devices = sorted(set(range(int(hardware.get("neuron_device_count") or 0))) | set(ecc))
    utilization = core_utilization(report)

    result = []
    for device in devices:
        fields: Record = {**identity, "Type": "NodeAWSNeuronDevice", "NeuronDevice": str(device)}
        metrics = []
        if cores_per_device:
            cores = range(device * cores_per_device, (device + 1) * cores_per_device)
            # An array: one value per core, so node and cluster averages weigh every core alike.
            fields[NEURONCORE_UTILIZATION] = [utilization.get(core, 0.0) for core in cores]
            metrics.append((NEURONCORE_UTILIZATION, "Percent"))
        if device in ecc:
            for kind, count in ecc[device].items():
                fields[f"{ECC_EVENTS}_{kind}"] = count
            fields[ECC_EVENTS] = sum(ecc[device].values())
            metrics.append((ECC_EVENTS, "Count"))
        directive = (CONTAINER_INSIGHTS_NAMESPACE, CLUSTER_DIMENSIONS, metrics)
        result.append(_emf(timestamp_ms, fields, [directive] if metrics else []))

    node_fields: Record = {
        **identity,
        "Type": "NodeAWSNeuron",
        EXECUTION_ERRORS: execution_errors(report),
        NODE_REPORTING: 1,
    }
    node_metrics = [(EXECUTION_ERRORS, "Count")]
    for counter, rate in sorted(efa_rates.items()):
        name, unit = EFA_COUNTERS[counter]
        node_fields[name] = rate
        node_metrics.append((name, unit))
    result.append(
        _emf(
            timestamp_ms,
            node_fields,
            [
                (CONTAINER_INSIGHTS_NAMESPACE, CLUSTER_DIMENSIONS, node_metrics),
                (HEALTH_NAMESPACE, (("ClusterName",),), [(NODE_REPORTING, "Count")]),
            ],
        )
    )
    return result


# --- EFA counters ------------------------------------------------------------------------------


def read_efa_counters(root: Path = EFA_SYSFS) -> dict[str, int]:
    """Totals since driver load of every EFA_COUNTERS counter, summed over devices and ports."""
    totals: dict[str, int] = {}
    for counters in sorted(root.glob("*/ports/*/hw_counters")):
        for name in EFA_COUNTERS:
            path = counters / name
            if path.is_file():
                totals[name] = totals.get(name, 0) + int(path.read_text().strip() or 0)
    return totals


class RateMeter:
    """Per-second rates between successive counter readings (none on the first, none on a reset)."""

    def __init__(self) -> None:
        self._last: tuple[float, Mapping[str, int]] | None = None

    def update(self, totals: Mapping[str, int], now: float) -> dict[str, float]:
        last, self._last = self._last, (now, dict(totals))
        if last is None or now <= last[0]:
            return {}
        elapsed = now - last[0]
        return {
            name: (value - last[1][name]) / elapsed
            for name, value in totals.items()
            if name in last[1] and value >= last[1][name]
        }


# --- the service -------------------------------------------------------------------------------


def monitor_config(interval_seconds: int) -> Record:
    """neuron-monitor configuration: the groups the records use, every runtime, one period."""
    return {
        "period": f"{interval_seconds}s",
        "neuron_runtimes": [
            {
                "tag_filter": ".*",
                "metrics": [{"type": "neuroncore_counters"}, {"type": "execution_stats"}],
            }
        ],
        "system_metrics": [{"type": "neuron_hw_counters"}],
    }


def metrics_writer(path: Path) -> logging.Logger:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=OUTPUT_MAX_BYTES, backupCount=1)
    handler.setFormatter(logging.Formatter("%(message)s"))
    writer = logging.getLogger(SERVICE)
    writer.handlers[:] = [handler]
    writer.setLevel(logging.INFO)
    writer.propagate = False
    return writer


def run(cluster_name: str, interval_seconds: int, output: Path) -> int:
    writer = metrics_writer(output)
    node_name = socket.gethostname()
    efa = RateMeter()
    config = output.parent / "neuron-monitor.json"
    config.write_text(json.dumps(monitor_config(interval_seconds)))
    command = [NEURON_MONITOR, "-c", str(config)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as monitor:
        for line in monitor.stdout:
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                continue
            now = time.time()
            for record in records(
                report,
                cluster_name=cluster_name,
                node_name=node_name,
                efa_rates=efa.update(read_efa_counters(), now),
                timestamp_ms=int(now * 1000),
            ):
                writer.info(json.dumps(record, separators=(",", ":")))
    # neuron-monitor ended: systemd restarts the service.
    return monitor.returncode or 1


# --- installation ------------------------------------------------------------------------------


def agent_config(log_group: str, output: Path) -> Record:
    """A CloudWatch agent configuration fragment: the metrics file to the log group, one stream
    per instance. Appended to whatever the node's agent already does (ParallelCluster's logs)."""
    collect = {
        "file_path": str(output),
        "log_group_name": log_group,
        "log_stream_name": "{instance_id}",
    }
    return {"logs": {"logs_collected": {"files": {"collect_list": [collect]}}}}


def unit_file(
    python: str, script: Path, cluster_name: str, interval_seconds: int, output: Path
) -> str:
    command = (
        f"{python} {script} run --cluster-name {cluster_name} "
        f"--interval {interval_seconds} --output {output}"
    )
    return "\n".join([
        "[Unit]",
        "Description=trn-kit: neuron-monitor metrics to CloudWatch",
        "After=network-online.target",
        "",
        "[Service]",
        f"ExecStart={command}",
        "Restart=always",
        "RestartSec=30",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])  # fmt: skip


def ensure_agent(region: str) -> None:
    """The CloudWatch agent, installed from AWS's regional package if the image lacks it."""
    if AGENT_CTL.exists():
        return
    with tempfile.TemporaryDirectory() as scratch:
        package = Path(scratch) / "amazon-cloudwatch-agent.deb"
        urllib.request.urlretrieve(AGENT_DEB_URL.format(region=region), package)
        subprocess.run(["dpkg", "-i", str(package)], check=True)


def install(cluster_name: str, log_group: str, region: str, interval_seconds: int) -> int:
    script = INSTALL_DIR / Path(__file__).name
    config = INSTALL_DIR / f"{SERVICE}-agent.json"
    unit = SYSTEMD_DIR / f"{SERVICE}.service"
    try:
        if not Path(NEURON_MONITOR).exists():
            raise FileNotFoundError(f"{NEURON_MONITOR} (aws-neuronx-tools) is not installed")
        INSTALL_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(__file__, script)
        config.write_text(json.dumps(agent_config(log_group, OUTPUT), indent=2) + "\n")
        unit.write_text(unit_file(sys.executable, script, cluster_name, interval_seconds, OUTPUT))
        ensure_agent(region)
        subprocess.run(
            [str(AGENT_CTL), "-a", "append-config", "-m", "ec2", "-s", "-c", f"file:{config}"],
            check=True,
        )
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "enable", "--now", f"{SERVICE}.service"], check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"{SERVICE}: NOT shipping Neuron metrics from this node: {error}", file=sys.stderr)
        return 0
    print(f"{SERVICE}: shipping Neuron metrics to {log_group} as cluster {cluster_name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    def cluster(value: str) -> str:
        if not CLUSTER_NAME.fullmatch(value):
            raise argparse.ArgumentTypeError(f"not a cluster name: {value!r}")
        return value

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("install", "run"):
        command = commands.add_parser(name)
        command.add_argument("--cluster-name", required=True, type=cluster)
        command.add_argument("--interval", type=int, default=DEFAULT_INTERVAL_SECONDS)
    commands.choices["install"].add_argument("--log-group", required=True)
    commands.choices["install"].add_argument("--region", required=True)
    commands.choices["run"].add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.command == "install":
        return install(args.cluster_name, args.log_group, args.region, args.interval)
    return run(args.cluster_name, args.interval, args.output)


if __name__ == "__main__":
    sys.exit(main())
