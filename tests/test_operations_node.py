"""The Slurm nodes' metrics shipper: neuron-monitor reports -> Container Insights EMF records, EFA
rates, the CloudWatch agent and systemd pieces, and installation that never fails a node."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trn_constructs.operations.node import ship_neuron_metrics as shipper

CLUSTER = "train-slurm"
DIMENSIONS = [["ClusterName"], ["ClusterName", "InstanceId", "NodeName"]]


def report(*, hw_error: str = "") -> dict:
    """A neuron-monitor report in its documented shape: two runtimes (one failed), two devices of
    four NeuronCores, an uncorrected HBM error on device 1."""
    def runtime(cores: dict, errors: dict, error: str = "") -> dict:
        return {
            "pid": 1, "neuron_runtime_tag": "1", "error": error,
            "report": {
                "neuroncore_counters": {"period": 60.0, "error": "", "neuroncores_in_use": {
                    index: {"neuroncore_utilization": value} for index, value in cores.items()
                }},
                "execution_stats": {"period": 60.0, "error": "", "error_summary": errors},
            },
        }  # fmt: skip

    return {
        "neuron_runtime_data": [
            runtime({"0": 90.0, "1": 80.0}, {"generic": 1, "hardware": 2}),
            runtime({"5": 50.0}, {"numerical": 3}),
            runtime({"6": 99.0}, {"runtime": 7}, error="runtime unreachable"),
        ],
        "system_data": {"neuron_hw_counters": {"period": 60.0, "error": hw_error, "neuron_devices": [
            {"neuron_device_index": 0, "mem_ecc_corrected": 2, "mem_ecc_uncorrected": 0,
             "sram_ecc_corrected": 0, "sram_ecc_uncorrected": 0},
            {"neuron_device_index": 1, "mem_ecc_corrected": 0, "mem_ecc_uncorrected": 1,
             "sram_ecc_corrected": 0, "sram_ecc_uncorrected": 0},
        ]}},
        "instance_info": {"instance_id": "i-0123456789abcdef0", "instance_type": "trn2.48xlarge"},
        "neuron_hardware_info": {"neuron_device_count": 2, "neuroncore_per_device_count": 4, "error": ""},
    }  # fmt: skip


def records(source: dict | None = None, efa_rates: dict | None = None) -> list[dict]:
    return shipper.records(
        source or report(),
        cluster_name=CLUSTER,
        node_name="trainium-st-trn2-48xlarge-1",
        efa_rates=efa_rates or {},
        timestamp_ms=1_700_000_000_000,
    )


def test_one_record_per_device_and_one_for_the_node():
    device0, device1, node = records()
    identity = {
        "ClusterName": CLUSTER,
        "InstanceId": "i-0123456789abcdef0",
        "InstanceType": "trn2.48xlarge",
        "NodeName": "trainium-st-trn2-48xlarge-1",
    }
    for record in (device0, device1, node):
        assert record.items() >= identity.items()
        assert record["_aws"]["Timestamp"] == 1_700_000_000_000
    assert (device0["NeuronDevice"], device1["NeuronDevice"]) == ("0", "1")
    assert device0["Type"] == "NodeAWSNeuronDevice" and node["Type"] == "NodeAWSNeuron"


def test_device_records_carry_core_utilisation_and_ecc_by_kind():
    device0, device1, _ = records()
    # Cores 0-3 on device 0, 4-7 on device 1; idle cores count as 0; the failed runtime's core 6
    # is not reported.
    assert device0[shipper.NEURONCORE_UTILIZATION] == [90.0, 80.0, 0.0, 0.0]
    assert device1[shipper.NEURONCORE_UTILIZATION] == [0.0, 50.0, 0.0, 0.0]
    assert device0[shipper.ECC_EVENTS] == 2 and device1[shipper.ECC_EVENTS] == 1
    assert device1["node_neurondevice_hw_ecc_events_total_mem_ecc_uncorrected"] == 1
    (directive,) = device0["_aws"]["CloudWatchMetrics"]
    assert directive == {
        "Namespace": "ContainerInsights",
        "Dimensions": DIMENSIONS,
        "Metrics": [
            {"Name": "node_neuroncore_utilization", "Unit": "Percent"},
            {"Name": "node_neurondevice_hw_ecc_events_total", "Unit": "Count"},
        ],
    }


def test_only_devices_with_uncorrected_events_match_the_stacks_metric_filter():
    def matches(record):  # the metric filter's pattern: any uncorrected field above 0
        return any(record.get(field, 0) > 0 for field in shipper.UNCORRECTED_ECC_FIELDS)

    device0, device1, node = records()
    assert [matches(r) for r in (device0, device1, node)] == [False, True, False]
    assert set(shipper.UNCORRECTED_ECC_FIELDS) == {
        "node_neurondevice_hw_ecc_events_total_mem_ecc_uncorrected",
        "node_neurondevice_hw_ecc_events_total_sram_ecc_uncorrected",
    }


def test_a_failed_hardware_counter_group_publishes_no_ecc():
    device0, _, _ = records(report(hw_error="permission denied"))
    assert shipper.ECC_EVENTS not in device0
    assert [m["Name"] for m in device0["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == [
        "node_neuroncore_utilization"
    ]


def test_node_record_execution_errors_efa_rates_and_heartbeat():
    *_, node = records(efa_rates={"rx_bytes": 10.0, "rdma_write_bytes": 5.0})
    assert node[shipper.EXECUTION_ERRORS] == 6  # 1 + 2 + 3; the failed runtime's 7 is unknown
    assert node["node_efa_rx_bytes"] == 10.0 and node["node_efa_rdma_write_bytes"] == 5.0
    assert node[shipper.NODE_REPORTING] == 1
    insights, health = node["_aws"]["CloudWatchMetrics"]
    assert insights == {
        "Namespace": "ContainerInsights",
        "Dimensions": DIMENSIONS,
        "Metrics": [
            {"Name": "node_neuron_execution_errors_total", "Unit": "Count"},
            {"Name": "node_efa_rdma_write_bytes", "Unit": "Bytes/Second"},
            {"Name": "node_efa_rx_bytes", "Unit": "Bytes/Second"},
        ],
    }
    assert health == {
        "Namespace": "TrnCluster/Health",
        "Dimensions": [["ClusterName"]],
        "Metrics": [{"Name": "NodeReporting", "Unit": "Count"}],
    }


def test_efa_counters_summed_over_devices_and_ports(tmp_path):
    for device, values in (("rdmap0s1", {"rx_bytes": 100, "tx_bytes": 7}), ("rdmap1s1", {"rx_bytes": 5})):
        counters = tmp_path / device / "ports" / "1" / "hw_counters"
        counters.mkdir(parents=True)
        for name, value in values.items():
            (counters / name).write_text(f"{value}\n")
        (counters / "unrelated").write_text("9\n")
    assert shipper.read_efa_counters(tmp_path) == {"rx_bytes": 105, "tx_bytes": 7}
    assert shipper.read_efa_counters(tmp_path / "absent") == {}


def test_rates_between_readings_skip_the_first_and_resets():
    meter = shipper.RateMeter()
    assert meter.update({"rx_bytes": 100, "tx_bytes": 50}, now=10.0) == {}
    assert meter.update({"rx_bytes": 700, "tx_bytes": 20}, now=70.0) == {"rx_bytes": 10.0}
    assert meter.update({"rx_bytes": 700}, now=70.0) == {}  # no time has passed


def test_agent_unit_and_monitor_configuration(tmp_path):
    output = tmp_path / "metrics.log"
    assert shipper.agent_config("/aws/containerinsights/c/performance", output) == {
        "logs": {"logs_collected": {"files": {"collect_list": [{
            "file_path": str(output),
            "log_group_name": "/aws/containerinsights/c/performance",
            "log_stream_name": "{instance_id}",
        }]}}}
    }  # fmt: skip
    unit = shipper.unit_file("/usr/bin/python3", tmp_path / "s.py", CLUSTER, 60, output)
    assert f"ExecStart=/usr/bin/python3 {tmp_path / 's.py'} run --cluster-name {CLUSTER} --interval 60 --output {output}" in unit
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit
    config = shipper.monitor_config(60)
    assert config["period"] == "60s"
    assert config["system_metrics"] == [{"type": "neuron_hw_counters"}]
    assert {m["type"] for m in config["neuron_runtimes"][0]["metrics"]} == {
        "neuroncore_counters", "execution_stats",
    }


def test_run_turns_each_report_into_records(tmp_path, monkeypatch):
    monitor = tmp_path / "neuron-monitor"
    lines = [json.dumps(report()), "not json", json.dumps(report())]
    monitor.write_text(
        f"#!{sys.executable}\nimport sys\nassert sys.argv[1] == '-c'\n"
        + "".join(f"print({line!r})\n" for line in lines)
    )
    monitor.chmod(0o755)
    monkeypatch.setattr(shipper, "NEURON_MONITOR", str(monitor))
    output = tmp_path / "out" / "metrics.log"
    assert shipper.main(["run", "--cluster-name", CLUSTER, "--output", str(output)]) == 1
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(written) == 6  # two reports x (two devices + the node)
    assert all(record["ClusterName"] == CLUSTER and "_aws" in record for record in written)
    assert json.loads((output.parent / "neuron-monitor.json").read_text()) == shipper.monitor_config(60)


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A node whose paths live under tmp_path and whose commands are recorded, not run."""
    monitor, agent = tmp_path / "neuron-monitor", tmp_path / "amazon-cloudwatch-agent-ctl"
    monitor.write_text("")
    agent.write_text("")
    commands = []
    monkeypatch.setattr(shipper, "NEURON_MONITOR", str(monitor))
    monkeypatch.setattr(shipper, "AGENT_CTL", agent)
    monkeypatch.setattr(shipper, "INSTALL_DIR", tmp_path / "opt")
    monkeypatch.setattr(shipper, "SYSTEMD_DIR", tmp_path)
    monkeypatch.setattr(shipper.subprocess, "run", lambda command, check: commands.append(command))
    return tmp_path, commands


def test_install_configures_the_agent_and_starts_the_service(node):
    root, commands = node
    assert shipper.install(CLUSTER, "/aws/containerinsights/c/performance", "us-east-2", 60) == 0
    config = root / "opt" / "trn-kit-neuron-metrics-agent.json"
    assert json.loads(config.read_text()) == shipper.agent_config(
        "/aws/containerinsights/c/performance", shipper.OUTPUT
    )
    assert (root / "opt" / "ship_neuron_metrics.py").read_text() == open(shipper.__file__).read()
    assert f"--cluster-name {CLUSTER}" in (root / "trn-kit-neuron-metrics.service").read_text()
    assert commands == [
        [str(root / "amazon-cloudwatch-agent-ctl"), "-a", "append-config", "-m", "ec2", "-s",
         "-c", f"file:{config}"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "trn-kit-neuron-metrics.service"],
    ]  # fmt: skip


def test_install_never_fails_the_node(node, monkeypatch, capsys):
    root, commands = node
    monkeypatch.setattr(shipper, "NEURON_MONITOR", str(root / "missing"))
    assert shipper.install(CLUSTER, "/g", "us-east-2", 60) == 0
    assert "NOT shipping Neuron metrics" in capsys.readouterr().err
    assert commands == []

    def failing(command, check):
        raise subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(shipper, "NEURON_MONITOR", str(root / "neuron-monitor"))
    monkeypatch.setattr(shipper.subprocess, "run", failing)
    assert shipper.install(CLUSTER, "/g", "us-east-2", 60) == 0
    assert "NOT shipping Neuron metrics" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["has space", "semi;colon", "-leading", ""])
def test_cluster_names_that_cannot_go_into_a_unit_file_are_refused(name):
    with pytest.raises(SystemExit) as exit_info:
        shipper.main(["install", "--cluster-name", name, "--log-group", "/g", "--region", "us-east-2"])
    assert exit_info.value.code == 2
