"""One core's measurement (trn_burnin.measure.burn_core) against fake kernels on a fake clock.

The scenarios of issue 15: a first call (the compile) longer than the warm-up, a slow core, host
jitter, impossible results, and a node without device tracing.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.burnin.fakes import FakeHost, neuron_ls_json
from trn_burnin.catalog import BF16, CATALOG, NEURONCORE_V3
from trn_burnin.measure import DEVICE, DEVICE_BATCH, HOST, DeviceTimingUnavailable, burn_core
from trn_burnin.plan import DEFAULT_SHAPE, plan_gemm
from trn_burnin.runner import RunOptions, run_burnin
from trn_burnin.thresholds import Thresholds
from trn_burnin.workload import ReferenceTile

PLAN = plan_gemm(NEURONCORE_V3, BF16, *DEFAULT_SHAPE)
PEAK = NEURONCORE_V3.peak_tflops_per_core(BF16)
AT_PEAK = PLAN.flops / (PEAK * 1e12)  # seconds per GEMM of a core at exactly its peak (1.75 ms)
OUTPUT = np.zeros((1, 1), np.float32)
TILES = (ReferenceTile(slice(0, 1), slice(0, 1), np.zeros((1, 1), np.float32)),)


class FakeKernel:
    """A core that takes ``gemm_s`` per GEMM and ``overhead_s`` per launch on the host; the first
    launch of each variant also takes ``first_call_s`` (loading, or compiling in the worker)."""

    def __init__(self, clock, gemm_s, *, overhead_s=0.012, first_call_s=0.0, device=True, jitter=None,
                 device_seconds=None, events=DEVICE_BATCH):
        self.clock, self.gemm_s, self.overhead_s, self.first_call_s = clock, gemm_s, overhead_s, first_call_s
        self.device, self.jitter, self.fixed_device, self.events = device, jitter, device_seconds, events
        self.launched = set()

    def launch(self, repeat):
        extra = self.first_call_s if repeat not in self.launched else 0.0
        self.launched.add(repeat)
        self.clock[0] += extra + self.overhead_s + self.gemm_s * repeat + (self.jitter() if self.jitter else 0.0)
        return OUTPUT

    def device_seconds(self, repeat, iterations):
        if not self.device:
            raise DeviceTimingUnavailable("no device execution events captured")
        self.clock[0] += iterations * (self.overhead_s + self.gemm_s * repeat)
        each = self.gemm_s * repeat if self.fixed_device is None else self.fixed_device
        return [each] * (self.events if iterations == DEVICE_BATCH else iterations), OUTPUT


def burn(kernel, clock, repeat=4, warmup_s=30.0, duration_s=180.0):
    return burn_core(kernel, PLAN, TILES, core=7, device=0, repeat=repeat, warmup_s=warmup_s,
                     duration_s=duration_s, peak_tflops=PEAK, clock=lambda: clock[0])


def verdict_of(result):
    """The node's verdict with every core like ``result`` except core 7 (this one)."""
    host = FakeHost(listing=neuron_ls_json(16))
    host.overrides[7] = result
    options = RunOptions(spec=CATALOG["trn2"], instance_id="i-0123", ultraserver_id=None, dtype=BF16,
                         shape=DEFAULT_SHAPE, repeat=4, warmup_s=30, duration_s=180, sample_tiles=8, seed=0,
                         thresholds=Thresholds.for_dtype(BF16))
    failures = run_burnin(options, host, now=lambda: "2026-11-22T06:00:00Z")["verdict"]["failures"]
    return [(f["rule"], f["message"]) for f in failures if f["core"] == 7]


@pytest.mark.parametrize("device", [False, True], ids=["host timing", "device timing"])
def test_a_compile_longer_than_the_warm_up_no_longer_passes_a_57x_slow_core(device):
    # The replay of issue 15: each variant's first call compiles for 10 minutes (20 x the warm-up)
    # and the core is 57x slower than its peak. It used to report 5.5e11 TFLOPS and pass.
    clock = [0.0]
    result = burn(FakeKernel(clock, 57 * AT_PEAK, first_call_s=600.0, device=device), clock)
    assert result.first_call_seconds == pytest.approx(1200, rel=0.01)  # timed apart, never warm-up
    assert result.timing == (DEVICE if device else HOST)
    assert result.tflops == pytest.approx(PEAK / 57, rel=1e-3)
    assert result.measurement_invalid is None
    (rule, message), *_ = verdict_of(result)
    assert rule == "throughput_peak"
    assert message == ("core 7 (device 0) reached 1.4 TFLOPS bf16, below 70% of the 78.6 TFLOPS per-core peak")


def test_host_timing_subtracts_the_launch_overhead_estimated_in_warm_up():
    clock = [0.0]
    result = burn(FakeKernel(clock, 1.25 * AT_PEAK, overhead_s=0.040, device=False), clock)
    assert result.tflops == pytest.approx(PEAK / 1.25, rel=1e-6)  # the 40 ms per launch is gone
    assert result.latency_p50_ms == pytest.approx(1.25 * AT_PEAK * 1e3)
    assert "40 ms launch overhead subtracted" in result.timing_detail
    assert "device timing unavailable (no device execution events captured)" in result.timing_detail


def test_a_slow_core_fails_both_throughput_rules():
    clock = [0.0]
    result = burn(FakeKernel(clock, 3 * AT_PEAK), clock)
    assert result.tflops == pytest.approx(PEAK / 3)
    assert [rule for rule, _ in verdict_of(result)] == ["throughput_peak", "throughput_outlier"]


def test_host_jitter_does_not_move_the_median():
    # 128 workers share the host: every launch gets 0-20 ms of noise, one in twenty stalls 400 ms.
    rng = random.Random(15)
    clock = [0.0]
    jitter = lambda: rng.uniform(0, 0.020) + (0.4 if rng.random() < 0.05 else 0.0)  # noqa: E731
    result = burn(FakeKernel(clock, 1.1 * AT_PEAK, device=False, jitter=jitter), clock)
    assert result.tflops == pytest.approx(PEAK / 1.1, rel=0.05)
    assert result.latency_p99_ms > 50 * result.latency_p50_ms  # the stalls are still reported
    assert "launches read <= 0 (host noise above the GEMM time)" in result.timing_detail
    assert verdict_of(result) == []


@pytest.mark.parametrize("kernel, invalid", [
    # a device that reports twice its peak
    (dict(gemm_s=AT_PEAK, device_seconds=4 * AT_PEAK / 2),
     "measurement invalid: 157.3 TFLOPS (0.874 ms per GEMM, device timing) is above 1.05 x the 78.6 TFLOPS peak"),
    # a device timer that reads 0
    (dict(gemm_s=AT_PEAK, device_seconds=0.0),
     "measurement invalid: 20 of 20 device-timed GEMM latencies were not positive"),
    # several trace events per execution
    (dict(gemm_s=AT_PEAK, events=2 * DEVICE_BATCH),
     "measurement invalid: the device trace reported 40 executions for 20"),
    # host launches of 4 GEMMs no slower than launches of 1
    (dict(gemm_s=0.0, device=False),
     "measurement invalid: launches of 4 GEMMs (median 12 ms) were not slower than launches of 1 (12 ms)"),
], ids=["above peak", "zero latency", "extra events", "no overhead estimate"])
def test_an_impossible_result_fails_the_core_and_never_passes(kernel, invalid):
    clock = [0.0]
    result = burn(FakeKernel(clock, **kernel), clock, duration_s=0.1)
    assert result.tflops is None and result.latency_p50_ms is None
    assert result.measurement_invalid is not None
    rules = verdict_of(result)
    assert rules[0][0] == "measurement_invalid"
    assert rules[0][1].startswith("core 7 (device 0) " + invalid)


def test_the_warm_up_starts_after_the_first_calls_and_has_a_floor():
    clock = [0.0]
    kernel = FakeKernel(clock, AT_PEAK, first_call_s=100.0, device=False)
    result = burn(kernel, clock, warmup_s=0.0, duration_s=0.0)
    # even with no warm-up time, three pairs of launches estimate the overhead
    assert "from 3 warm-up pairs" in result.timing_detail
    assert result.iterations == 2 and result.tflops == pytest.approx(PEAK)
