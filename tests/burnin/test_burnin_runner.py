"""The runner's logic against fake nodes: discovery, evidence, verdicts, report schema, CLI."""

import json
from dataclasses import replace

import numpy as np
import pytest

from trn_burnin.catalog import BF16, NEURONCORE_V3
from trn_burnin.cli import main
from trn_burnin.counters import counter_changes, parse_hw_errors, read_sysfs_counters
from trn_burnin.discovery import DiscoveryError, parse_neuron_ls
from trn_burnin.emulation import Emulator
from trn_burnin.measure import burn_core
from trn_burnin.plan import plan_gemm
from trn_burnin.report import load_schema, validate_report
from trn_burnin.runner import RunOptions, run_burnin
from trn_burnin.verdict import Thresholds
from trn_burnin.worker import WorkerJob, run_worker
from trn_burnin.workload import make_operands, reference_tiles

HW_ERR = ("[ 812.1] neuron: NEURON_HW_ERR=HBM_UNCORRECTABLE_ERROR instance-id=i-0123 hostname=ip-10-0-0-1 "
          "nd-id=3 nc-id=1 serial-num=19fc action=TERMINATE_INSTANCE")


def _options(spec, **changes):
    base = RunOptions(spec=spec, instance_id="i-0123", ultraserver_id=None, dtype=BF16, shape=(4096, 4096, 4096),
                      repeat=4, warmup_s=30, duration_s=180, sample_tiles=8, seed=0,
                      thresholds=Thresholds.for_dtype(BF16))
    return replace(base, **changes)


def _run(spec, host, **changes):
    report = run_burnin(_options(spec, **changes), host, now=lambda: "2026-11-22T06:00:00Z")
    assert validate_report(report) == []
    return report


def _rules(report):
    return [(f["rule"], f["device"], f["core"]) for f in report["verdict"]["failures"]]


# -- discovery ---------------------------------------------------------------------------------
def test_neuron_ls_counts_physical_cores_under_lnc2(make_listing):
    topology = parse_neuron_ls(make_listing(16, logical_cores=4, lnc=2))
    assert len(topology.devices) == 16
    assert [d.physical_cores for d in topology.devices] == [8] * 16
    assert topology.cores[:9] == tuple((c, 0) for c in range(8)) + ((8, 1),)
    assert len(topology.cores) == 128


def test_neuron_ls_newer_format_and_bad_output(make_listing):
    wrapped = json.dumps({"instance_type": "trn2.48xlarge", "devices": json.loads(make_listing(2, 8, 1))})
    assert [d.index for d in parse_neuron_ls(wrapped).devices] == [0, 1]
    with pytest.raises(DiscoveryError, match="not JSON"):
        parse_neuron_ls("neuron-ls: command not found")
    with pytest.raises(DiscoveryError, match="lacks 'nc_count'"):
        parse_neuron_ls('[{"neuron_device": 0}]')


# -- evidence ----------------------------------------------------------------------------------
def test_sysfs_counters_are_found_wherever_the_driver_puts_them(tmp_path):
    for device, layout, value in ((0, "stats/hardware", "2"), (1, "stats/hardware", "0"), (1, "hw", "5")):
        counter = tmp_path / f"neuron{device}" / layout / "sram_ecc_uncorrected"
        counter.mkdir(parents=True, exist_ok=True)
        (counter / "total").write_text(value + "\n")
        (counter / "present").write_text("0\n")
    (tmp_path / "neuron0" / "stats" / "hardware" / "mem_ecc_corrected").mkdir()
    (tmp_path / "neuron0" / "stats" / "hardware" / "mem_ecc_corrected" / "total").write_text("7")
    (tmp_path / "neuron_misc").mkdir()
    assert read_sysfs_counters(tmp_path) == {
        (0, "mem_ecc_corrected"): 7, (0, "sram_ecc_uncorrected"): 2, (1, "sram_ecc_uncorrected"): 5}
    assert read_sysfs_counters(tmp_path / "absent") == {}


def test_counter_deltas_and_classification():
    changes = counter_changes({(0, "mem_ecc_uncorrected"): 1, (0, "sram_ecc_corrected"): 4},
                              {(0, "mem_ecc_uncorrected"): 3, (1, "mem_ecc_repairable_uncorrected"): 1})
    summary = [(c.device, c.name, c.memory, c.uncorrectable, c.delta) for c in changes]
    assert summary == [(0, "mem_ecc_uncorrected", "HBM", True, 2), (0, "sram_ecc_corrected", "SRAM", False, -4),
                       (1, "mem_ecc_repairable_uncorrected", "HBM", True, 1)]


def test_hw_error_lines_are_parsed():
    errors = parse_hw_errors("boot ok\n" + HW_ERR + "\nNEURON_HW_ERR=DMA_ERROR\n")
    assert [(e.kind, e.device, e.core) for e in errors] == [("HBM_UNCORRECTABLE_ERROR", 3, 1), ("DMA_ERROR", None, None)]


# -- one core's measurement --------------------------------------------------------------------
def test_burn_core_subtracts_launch_overhead_and_checks_outputs():
    plan = plan_gemm(NEURONCORE_V3, BF16, 128, 128, 128)
    operands = make_operands(plan, seed=0)
    tiles = reference_tiles(operands, plan, 2, seed=0)
    good = (operands.lhsT.T @ operands.rhs).astype(np.float32)
    clock = [0.0]
    # warm-up takes two launches; then an identical copy (not a mismatch) and one output with NaNs
    outputs = iter([good] * 2 + [good, good.copy(), np.where(good > 0.5, np.nan, good), good])

    def execute(repeat):  # 10 ms launch overhead + 1 ms per GEMM
        clock[0] += 0.010 + 0.001 * repeat
        return next(outputs)

    result = burn_core(execute, plan, tiles, core=5, device=0, repeat=4, warmup_s=0.02, duration_s=0.05,
                       clock=lambda: clock[0])
    assert result.latency_p50_ms == pytest.approx(1.0)
    assert result.tflops == pytest.approx(plan.flops / 1e-3 / 1e12)
    assert result.iterations == 4 and result.mismatched_iterations == 1
    assert result.nan_count == int((good > 0.5).sum()) and result.inf_count == 0
    assert np.isinf(result.max_abs_error)  # NaN in a sampled tile counts as an unbounded error


def test_worker_runs_the_emulated_kernel_end_to_end():
    plan = plan_gemm(NEURONCORE_V3, BF16, 256, 256, 512)
    job = WorkerJob(plan, repeat=2, warmup_s=0, duration_s=0, sample_tiles=4, seed=7)
    assert WorkerJob.from_json(job.to_json()) == job

    def emulated(plan, operands):
        kernel = Emulator(NEURONCORE_V3).load_kernel()
        return lambda repeat: kernel.burnin_gemm(*operands.inputs.values(), **plan.kernel_kwargs(repeat))

    result = run_worker(job, core=3, device=0, executor=emulated)
    assert result.error is None and result.iterations == 2
    assert result.max_rel_error < 1e-6 and result.mismatched_iterations == 0
    failed = run_worker(job, core=3, device=0)  # the real executor: no Neuron nki here
    assert failed.error is not None and failed.core == 3


# -- verdicts ----------------------------------------------------------------------------------
def test_healthy_node_passes(trn2, fake_host):
    report = _run(trn2, fake_host)
    assert report["verdict"] == {"passed": True, "failures": []}
    assert len(report["cores"]) == 128 and len(report["chips"]) == 16
    assert report["chips"][0]["tflops"] == pytest.approx(8 * 60.0)
    cores, job = fake_host.jobs[0]
    assert len(cores) == 128 and job.plan.block_m == 1024 and job.repeat == 4


def test_slow_core_fails_both_throughput_rules(trn2, fake_host, make_result):
    fake_host.overrides[17] = make_result(17, 2, tflops=20.0)
    report = _run(trn2, fake_host)
    assert _rules(report) == [("throughput_peak", 2, 17), ("throughput_outlier", 2, 17)]
    messages = [f["message"] for f in report["verdict"]["failures"]]
    assert messages[0].startswith("core 17 (device 2) reached 20.0 TFLOPS bf16, below 70% of the 78.6")
    assert "below 90% of the node median 60.0 TFLOPS" in messages[1]
    assert [c["passed"] for c in report["chips"]][1:3] == [True, False]


def test_outlier_fails_even_above_the_peak_floor(trn2, fake_host, make_result):
    fake_host.overrides[40] = make_result(40, 5, tflops=56.0)  # 71% of peak, 93% of the median: passes
    fake_host.overrides[42] = make_result(42, 5, tflops=51.0)  # 65% of peak, 85% of the median: outlier
    report = _run(trn2, fake_host, thresholds=Thresholds.for_dtype(BF16, min_peak_fraction=0.5))
    assert _rules(report) == [("throughput_outlier", 5, 42)]


def test_wrong_results_fail(trn2, fake_host, make_result):
    fake_host.overrides[3] = replace(make_result(3, 0), max_rel_error=0.25, nan_count=2, mismatched_iterations=3)
    report = _run(trn2, fake_host)
    assert _rules(report) == [("nan_inf", 0, 3), ("numerical_error", 0, 3), ("repeatability", 0, 3)]
    assert "max relative error 2.50e-01 exceeds the bf16 tolerance 1e-03" in report["verdict"]["failures"][1]["message"]


def test_uncorrectable_ecc_and_hw_error_lines_fail_the_chip(trn2, fake_host):
    fake_host.counters_after = {(0, "mem_ecc_uncorrected"): 1, (0, "sram_ecc_uncorrected"): 0,
                                (0, "mem_ecc_corrected"): 9}
    fake_host.log = HW_ERR
    report = _run(trn2, fake_host)
    assert _rules(report) == [("ecc_uncorrectable", 0, None), ("hw_error_log", 3, None)]
    assert report["verdict"]["failures"][0]["message"] == (
        "device 0 HBM has 1 uncorrectable ECC events (mem_ecc_uncorrected), 1 during the burn-in")
    assert not report["chips"][0]["passed"] and not report["chips"][3]["passed"]
    assert {"counter": "mem_ecc_corrected", "memory": "HBM", "uncorrectable": False, "before": 0,
            "after": 9} in report["chips"][0]["ecc"]
    assert report["hardware_errors"] == [HW_ERR.strip()]


def test_missing_device_fails_with_its_index(trn2, fake_host, make_listing):
    fake_host.listing = make_listing(16, skip=[7])
    report = _run(trn2, fake_host)
    assert _rules(report) == [("device_count", None, None)]
    assert report["verdict"]["failures"][0]["message"] == (
        "found 15 Neuron devices, trn2.48xlarge should have 16; missing device index 7")
    assert len(report["cores"]) == 120


def test_missing_cores_and_crashed_worker_fail(trn2, fake_host, make_listing, make_result):
    listing = json.loads(make_listing(16))
    listing[4]["nc_count"] = 3
    fake_host.listing = json.dumps(listing)
    fake_host.overrides[0] = replace(make_result(0, 0), error="worker exited 1: NRT init failed")
    report = _run(trn2, fake_host)
    assert _rules(report) == [("core_count", 4, None), ("core_error", 0, 0)]
    assert report["verdict"]["failures"][1]["message"] == (
        "core 0 (device 0) did not complete the burn-in: worker exited 1: NRT init failed")


def test_node_without_neuron_ls_fails_without_running(trn2, fake_host):
    fake_host.listing = "not json"
    report = _run(trn2, fake_host)
    assert _rules(report)[:2] == [("discovery", None, None), ("device_count", None, None)]
    assert fake_host.jobs == [] and report["cores"] == []


# -- report schema -----------------------------------------------------------------------------
def test_schema_validator_reports_paths(trn2, fake_host):
    report = _run(trn2, fake_host)
    report["cores"][2]["tflops"] = "fast"
    del report["node"]["instance_id"]
    report["verdict"]["failures"].append({"rule": "vibes", "message": "", "device": None, "core": None})
    report["schema_version"] = 2
    assert sorted(validate_report(report)) == sorted([
        "$.schema_version: expected 1, got 2",
        "$.node: missing 'instance_id'",
        "$.cores[2].tflops: expected number, got str",
        "$.verdict.failures[0].rule: 'vibes' is not one of " + str(
            load_schema()["properties"]["verdict"]["properties"]["failures"]["items"]["properties"]["rule"]["enum"]),
    ])


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_run_writes_report_and_exits_by_verdict(tmp_path, fake_host, capsys, make_result):
    argv = ["run", "--instance-type", "trn3.48xlarge", "--instance-id", "i-0123", "--output",
            str(tmp_path / "r.json"), "--catalog-overrides", '{"trn3-gen1": {"instance_type": "trn3.48xlarge"}}']
    assert main(argv, host=fake_host, identity=pytest.fail) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["node"]["catalog_key"] == "trn3-gen1" and report["verdict"]["passed"]
    assert capsys.readouterr().out.strip().endswith("PASS")
    fake_host.overrides[9] = replace(make_result(9, 1), max_rel_error=1.0)
    fake_host._reads = 0
    assert main(argv, host=fake_host, identity=pytest.fail) == 1
    assert "core 9 (device 1) max relative error" in capsys.readouterr().out


def test_cli_reads_identity_from_metadata(tmp_path, fake_host):
    assert main(["run", "--output", str(tmp_path / "r.json")], host=fake_host,
                identity=lambda: ("trn2.48xlarge", "i-9")) == 0
    assert json.loads((tmp_path / "r.json").read_text())["node"]["instance_id"] == "i-9"


@pytest.mark.parametrize("argv, message", [
    (["run", "--instance-type", "p5.48xlarge", "--instance-id", "i-1"], "'p5.48xlarge' is not in the catalog"),
    (["run", "--instance-type", "trn2.48xlarge", "--instance-id", "i-1", "--dtype", "mxfp8"],
     "mxfp8 is not supported on NeuronCore-v3"),
    (["run", "--catalog-overrides", "{nope"], "not valid JSON"),
    (["run", "--instance-type", "trn2.48xlarge", "--instance-id", "i-1", "--shape", "128", "100", "128"],
     "K=100 must be a multiple"),
    (["run", "--min-peak-fraction", "1.5"], "between 0 and 1"),
    (["run", "--s3-uri", "bucket/key"], "expected s3://bucket"),
    (["plan"], "could not read instance metadata"),
])
def test_cli_usage_errors_are_messages_not_tracebacks(argv, message, capsys):
    def no_metadata():
        raise OSError("no route to host")

    with pytest.raises(SystemExit) as exit_info:
        main(argv, host=None, identity=no_metadata)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
