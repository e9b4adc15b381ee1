"""The runner's logic against fake nodes: discovery, evidence, verdicts, report schema, CLI."""

import json
import re
import sys
from dataclasses import replace

import numpy as np
import pytest

from trn_burnin.catalog import BF16, CATALOG, NEURONCORE_V3
from trn_burnin.cli import main
from trn_burnin.counters import counter_changes, parse_hw_errors, read_sysfs_counters
from trn_burnin.device import NRTPY_PYTHON_ENV, KernelLoader, NeuronHost, find_nrtpy_python
from trn_burnin.discovery import DiscoveryError, parse_neuron_ls
from trn_burnin.emulation import Emulator
from tests.burnin import nrtpy_fake
from trn_burnin.artifacts import ARTIFACTS_ENV, compile_variant
from trn_burnin.measure import DeviceTimingUnavailable, burn_core
from trn_burnin.plan import plan_gemm
from trn_burnin.report_check import load_schema, validate_report
from trn_burnin.runner import RunOptions, run_burnin
from trn_burnin.thresholds import Thresholds
from trn_burnin.worker import NRTPY, NkiKernel, WorkerJob, run_worker
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


# -- one core's measurement: outputs, and the real worker path on the emulation -----------------
class _Outputs:
    """A host-timed kernel whose launches return the given outputs in turn."""

    def __init__(self, clock, outputs):
        self.clock, self.outputs = clock, iter(outputs)

    def launch(self, repeat):
        self.clock[0] += 0.010 + 0.001 * repeat
        return next(self.outputs)

    def device_seconds(self, repeat, iterations):
        raise DeviceTimingUnavailable("none here")


def test_burn_core_checks_every_measured_output():
    plan = plan_gemm(NEURONCORE_V3, BF16, 128, 128, 128)
    operands = make_operands(plan, seed=0)
    tiles = reference_tiles(operands, plan, 2, seed=0)
    good = (operands.lhsT.T @ operands.rhs).astype(np.float32)
    clock = [0.0]
    # first calls of both variants, three warm-up pairs (unchecked), then an identical copy (not a
    # mismatch), one output with NaNs and two good ones
    outputs = [good] * 2 + [None] * 6 + [good.copy(), np.where(good > 0.5, np.nan, good), good, good]
    result = burn_core(_Outputs(clock, outputs), plan, tiles, core=5, device=0, repeat=4, warmup_s=0,
                       duration_s=0.043, peak_tflops=78.6, clock=lambda: clock[0])
    assert result.timing == "host" and result.latency_p50_ms == pytest.approx(1.0)
    assert result.iterations == 4 and result.mismatched_iterations == 1
    assert result.nan_count == int((good > 0.5).sum()) and result.inf_count == 0
    assert np.isinf(result.max_abs_error)  # NaN in a sampled tile counts as an unbounded error


@pytest.fixture
def compiled_neffs(tmp_path, monkeypatch):
    """compile(plan, repeat) -> the emulated NEFF trn_burnin.artifacts leaves, as on a node: run once
    in a "process" whose NKI_ARTIFACTS_DIR was set before nki was imported."""

    def compile_(plan, repeat):
        directory = tmp_path / f"repeat-{repeat}"
        directory.mkdir()
        monkeypatch.setenv(ARTIFACTS_ENV, str(directory))
        kernel = Emulator(NEURONCORE_V3).load_kernel()
        return compile_variant(plan, repeat, 7, directory, kernel_module=kernel)

    return compile_


def test_a_variant_compiles_once_into_its_artifacts_directory(compiled_neffs):
    plan = plan_gemm(NEURONCORE_V3, BF16, 256, 256, 512)
    variant = compiled_neffs(plan, 4)
    assert variant.error is None and variant.neff.endswith("repeat-4/kernel.neff")
    neff = json.loads(open(variant.neff).read())
    assert neff["kernel"] == "burnin_gemm" and neff["inputs"] == ["lhsT_bits", "rhs_bits"]
    assert neff["kwargs"] == plan.kernel_kwargs(4)


def test_a_variant_that_does_not_compile_leaves_no_neff_and_says_why(tmp_path):
    class Broken:
        def burnin_gemm(self, *args, **kwargs):
            raise AssertionError("tile_n 1024 exceeds one PSUM bank")

    plan = plan_gemm(NEURONCORE_V3, BF16, 256, 256, 512)
    variant = compile_variant(plan, 1, 0, tmp_path, kernel_module=Broken())
    assert variant.neff is None and variant.error == "AssertionError: tile_n 1024 exceeds one PSUM bank"


def test_the_worker_loads_the_nodes_neffs_with_nrtpy_and_times_them_on_the_device(compiled_neffs, monkeypatch):
    plan = plan_gemm(NEURONCORE_V3, BF16, 128, 256, 512)
    clock = [0.0]
    monkeypatch.setattr(nrtpy_fake, "RUNTIME", nrtpy_fake.Runtime(clock, gemm_seconds=plan.flops / 70e12))
    monkeypatch.setitem(sys.modules, "nrtpy", nrtpy_fake)
    job = WorkerJob(plan, repeat=2, warmup_s=0, duration_s=0, sample_tiles=4, seed=7, peak_tflops=78.6,
                    loader=NRTPY)
    job = job.with_neffs({r: compiled_neffs(plan, r).neff for r in job.variants})
    assert WorkerJob.from_json(job.to_json()) == job
    phases = []
    result = run_worker(job, core=3, device=0, phase=phases.append, clock=lambda: clock[0])
    assert result.error is None and result.timing == "device" and phases == ["warming up", "measuring"]
    assert result.tflops == pytest.approx(70.0)
    assert result.max_rel_error < 1e-6 and result.mismatched_iterations == 0
    nrtpy_fake.RUNTIME.tracing = False  # nrtpy's device mode finds no execution events
    fallback = run_worker(job, core=3, device=0, phase=phases.append, clock=lambda: clock[0])
    assert fallback.timing == "host" and fallback.tflops == pytest.approx(70.0, rel=1e-6)
    assert fallback.timing_detail.startswith("device timing unavailable (nrtpy device mode: no device execution")


def test_without_nrtpy_the_worker_compiles_through_nki_and_times_on_the_host():
    plan = plan_gemm(NEURONCORE_V3, BF16, 128, 256, 512)
    job = WorkerJob(plan, repeat=2, warmup_s=0, duration_s=0, sample_tiles=4, seed=7, peak_tflops=1e9)
    kernel = Emulator(NEURONCORE_V3).load_kernel()
    result = run_worker(job, core=3, device=0, kernel=lambda job, operands: NkiKernel(job.plan, operands, kernel),
                        phase=lambda _: None)
    assert result.error is None and result.timing == "host" and result.iterations == 2
    assert "nrtpy was not found on this node" in result.timing_detail
    failed = run_worker(job, core=3, device=0, phase=lambda _: None)  # the real nki: not installed here
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


def test_the_kernel_is_compiled_once_for_the_node_before_the_workers_load_it(trn2, fake_host):
    lines = []
    report = run_burnin(_options(trn2), fake_host, now=lambda: "2026-11-22T06:00:00Z", progress=lines.append)
    ((job, target),) = fake_host.compiles
    assert job.variants == (1, 4) and target == "trn2" and job.peak_tflops == pytest.approx(78.6, abs=0.05)
    (_, worker_job), = fake_host.jobs
    assert worker_job.loader == "nrtpy" and sorted(worker_job.neffs) == ["1", "4"]
    assert report["kernel"]["loader"]["kind"] == "nrtpy"
    assert [c["repeat"] for c in report["kernel"]["compiled"]] == [1, 4]
    assert report["cores"][0]["timing"] == "device"
    assert lines == ["16 Neuron devices, 128 NeuronCores; bf16 GEMM 4096x4096x4096, 4 per launch; workers run the "
                     "kernel with nrtpy", "done: 128 of 128 cores"]


def test_a_kernel_that_does_not_compile_fails_the_node_before_any_core_runs(trn2, fake_host):
    fake_host.compile_errors[4] = "the compile process exited 1: NCC_EVRF007 ..."
    report = _run(trn2, fake_host)
    assert _rules(report) == [("compile_error", None, None)]
    assert report["verdict"]["failures"][0]["message"] == (
        "the repeat=4 kernel did not compile: the compile process exited 1: NCC_EVRF007 ...")
    assert fake_host.jobs == [] and report["cores"] == []
    assert not any(chip["passed"] for chip in report["chips"])


def test_without_nrtpy_workers_compile_themselves_and_get_no_neffs(trn2, fake_host):
    fake_host.loader = KernelLoader("nki", "/usr/bin/python3", "no interpreter with nrtpy")
    report = _run(trn2, fake_host)
    (_, job), = fake_host.jobs
    assert job.loader == "nki" and job.neffs == {}
    assert report["kernel"]["loader"] == {"kind": "nki", "python": "/usr/bin/python3",
                                          "note": "no interpreter with nrtpy"}


def test_an_invalid_measurement_is_excluded_from_the_median_and_from_the_chip(trn2, fake_host, make_result):
    fake_host.overrides[8] = replace(make_result(8, 1), tflops=None, latency_p50_ms=None, latency_p99_ms=None,
                                     measurement_invalid="5.5e+11 TFLOPS is above 1.05 x the 78.6 TFLOPS peak")
    report = _run(trn2, fake_host)
    assert _rules(report) == [("measurement_invalid", 1, 8)]
    assert report["cores"][8]["fraction_of_peak"] is None and not report["cores"][8]["passed"]
    assert report["chips"][1]["tflops"] == pytest.approx(7 * 60.0) and not report["chips"][1]["passed"]


def test_an_uncertain_peak_says_how_to_override_it(fake_host, make_result):
    spec = CATALOG["trn3-gen1"]
    fake_host.overrides[2] = make_result(2, 0, tflops=80.0)  # FP8 at the BF16 rate, below 70% of 157.3
    report = _run(spec, fake_host, dtype="fp8", thresholds=Thresholds.for_dtype("fp8", min_median_fraction=0.5))
    assert report["thresholds"]["peak_uncertain"] is True
    assert report["verdict"]["failures"][0]["message"].endswith(
        "(the catalog marks this peak UNCERTAIN: once measured, set catalogOverrides "
        "trn3-gen1.fp8PeakTflopsPerCore)")


# -- the real node's processes, with stand-in interpreters ------------------------------------------
def _interpreter(path, script):
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return str(path)


def test_nrtpy_is_looked_for_in_other_interpreters(tmp_path, monkeypatch):
    without = _interpreter(tmp_path / "nki-python", "exit 1")
    with_nrtpy = _interpreter(tmp_path / "nrtpy-python", 'case "$2" in *nrtpy*) exit 0;; esac; exit 1')
    assert find_nrtpy_python([without, str(tmp_path / "missing"), with_nrtpy]) == with_nrtpy
    assert find_nrtpy_python([without]) is None
    monkeypatch.setenv(NRTPY_PYTHON_ENV, with_nrtpy)
    assert find_nrtpy_python() == with_nrtpy


def test_a_node_without_nki_reports_the_compile_process_failure():
    plan = plan_gemm(NEURONCORE_V3, BF16, 128, 128, 512)
    job = WorkerJob(plan, repeat=2, warmup_s=0, duration_s=0, sample_tiles=2, seed=0, peak_tflops=78.6)
    lines = []
    compiled = NeuronHost().compile_kernels(job, "trn2", lines.append)
    assert [(c.repeat, c.neff) for c in compiled] == [(1, None), (2, None)]
    # The compile process runs; the kernel's `import nki` is what fails on a machine without Neuron.
    assert all(c.error.startswith("ModuleNotFoundError: No module named 'nki'") for c in compiled)
    assert lines[0].startswith("compiling the repeat=1 kernel once for the node, on core 0, into /tmp/")
    assert lines[-1] == "repeat=2 kernel did not compile: ModuleNotFoundError: No module named 'nki'"


def test_workers_report_their_phases_and_failures(tmp_path, monkeypatch, make_result):
    result = json.dumps(make_result(0, 0).to_dict())
    worker = _interpreter(tmp_path / "python", (
        'case "$2" in *worker*) ;; *) exit 1;; esac\n'
        'echo "trn-burnin-progress: warming up" >&2; echo "trn-burnin-progress: measuring" >&2\n'
        f'[ "$NEURON_RT_VISIBLE_CORES" = 0 ] && echo \'{result}\' && exit 0\n'
        'echo "NRT init failed on core $NEURON_RT_VISIBLE_CORES" >&2; exit 3'))
    host = NeuronHost()
    host._loader = KernelLoader("nrtpy", worker)
    plan = plan_gemm(NEURONCORE_V3, BF16, 128, 128, 512)
    job = WorkerJob(plan, repeat=2, warmup_s=0, duration_s=0, sample_tiles=2, seed=0, peak_tflops=78.6,
                    loader="nrtpy", neffs={"1": "a.neff", "2": "b.neff"})
    lines = []
    results = host.run_cores([(0, 0), (1, 0)], job, lines.append)
    assert results[0] == make_result(0, 0)
    assert results[1].error == "worker exited 3: NRT init failed on core 1"
    assert {"warming up: 2 of 2 cores", "measuring: 2 of 2 cores", "done: 2 of 2 cores"} <= set(lines)


# -- report schema -----------------------------------------------------------------------------
def test_schema_validator_reports_paths(trn2, fake_host):
    report = _run(trn2, fake_host)
    report["cores"][2]["tflops"] = "fast"
    del report["node"]["instance_id"]
    report["verdict"]["failures"].append({"rule": "vibes", "message": "", "device": None, "core": None})
    report["schema_version"] = 3
    assert sorted(validate_report(report)) == sorted([
        "$.schema_version: expected 2, got 3",
        "$.node: missing 'instance_id'",
        "$.cores[2].tflops: expected number or null, got str",
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


def test_cli_run_shows_progress_on_stderr(tmp_path, fake_host, capsys):
    assert main(["run", "--instance-type", "trn2.48xlarge", "--instance-id", "i-1", "--output",
                 str(tmp_path / "r.json")], host=fake_host, identity=pytest.fail) == 0
    out, err = capsys.readouterr()
    assert re.search(r"^trn-burnin \S+Z 16 Neuron devices, 128 NeuronCores", err, re.M)
    assert re.search(r"^trn-burnin \S+Z done: 128 of 128 cores$", err, re.M)
    assert out.splitlines()[-1] == "PASS" and "done:" not in out


def test_cli_plan_prints_what_each_core_must_reach_per_catalog_entry(capsys):
    assert main(["plan", "--catalog-overrides", '{"trn3-gen1": {"instanceType": "trn3u.48xlarge"}}'],
                identity=pytest.fail) == 0
    rows = {tuple(line.split()[:2] + line.split()[4:5]): line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows[("trn2", "trn2.48xlarge", "fp32")][3:10] == ["128", "fp32", "20.0", "14.0", "55", "228", "4.12"]
    assert rows[("trn3-gen1", "trn3u.48xlarge", "fp8")][5] == "157.3?"  # the UNCERTAIN peak
    assert rows[("trn3-gen1", "trn3u.48xlarge", "mxfp8")][6:10] == ["220.2", "514", "669", "1.30"]
    assert rows[("trn3-gen2", "trn3p.16xlarge", "bf16")][3] == "32"


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
    (["plan", "--instance-type", "p5.48xlarge"], "'p5.48xlarge' is not in the catalog"),
    (["plan", "--catalog-overrides", '{"trn2": {"efaNetworkCards": 0}}'],
     "--catalog-overrides: trn2.efaNetworkCards: got 0; allowed: a whole number 1-32"),
])
def test_cli_usage_errors_are_messages_not_tracebacks(argv, message, capsys):
    def no_metadata():
        raise OSError("no route to host")

    with pytest.raises(SystemExit) as exit_info:
        main(argv, host=None, identity=no_metadata)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
