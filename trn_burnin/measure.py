"""One NeuronCore's burn-in loop: first calls, warm-up, timed iterations, plausibility, and the checks
on every output.

Time comes from the device where the kernel runs under nrtpy (its device-side trace, one duration
per execution) and otherwise from the host's wall clock, with the launch and transfer overhead
estimated in warm-up from launches of 1 and of ``repeat`` GEMMs and subtracted. The first call of
each kernel variant (where the kernel is loaded, or compiled when nki runs it in this process) is
timed on its own and never counted as warm-up or measurement. A result that cannot be true is not
a measurement: it is reported as ``measurement_invalid`` and the core fails.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

import numpy as np

from trn_burnin.plan import GemmPlan
from trn_burnin.report_check import PLAUSIBLE_PEAK_MULTIPLE
from trn_burnin.workload import ReferenceTile, tile_errors

MIN_ITERATIONS = 2  # repeatability needs at least two outputs to compare
# Warm-up launches of each variant, however long they take: an estimate of launch overhead from a
# single launch would be whatever that launch happened to include.
MIN_WARMUP_LAUNCHES = 3
DEVICE_BATCH = 20  # executions per device-timed benchmark call
DEVICE, HOST = "device", "host"


class DeviceTimingUnavailable(RuntimeError):
    """The kernel runs, but no device-side timer can measure it here."""


class Kernel(Protocol):
    """The compiled kernel on one core, as the burn-in drives it."""

    def launch(self, repeat: int) -> np.ndarray:
        """One execution of the variant doing the GEMM ``repeat`` times; its float32 result."""
        ...

    def device_seconds(self, repeat: int, iterations: int) -> tuple[list[float], np.ndarray]:
        """``iterations`` executions timed on the device: seconds of each, and the last result.
        Raises DeviceTimingUnavailable where there is no device timer."""
        ...


@dataclass(frozen=True)
class CoreResult:
    """What one physical NeuronCore did; ``error`` set means it could not be measured, and
    ``measurement_invalid`` that what was measured cannot be true (no throughput is reported)."""

    core: int  # physical core index on the node (NEURON_RT_VISIBLE_CORES with LNC=1)
    device: int
    timing: str | None = None  # DEVICE or HOST
    timing_detail: str | None = None
    first_call_seconds: float | None = None  # loading (or compiling) and first runs, untimed
    iterations: int = 0
    tflops: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    nan_count: int = 0
    inf_count: int = 0
    mismatched_iterations: int = 0  # outputs not bitwise identical to the first one
    measurement_invalid: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _Outputs:
    """The checks every output gets: repeatability, NaN/Inf, error against the reference tiles."""

    def __init__(self, tiles: tuple[ReferenceTile, ...]):
        self.tiles, self.first, self.count = tiles, None, 0
        self.mismatches = self.nan = self.inf = 0
        self.worst_abs = self.worst_rel = 0.0

    def check(self, output: np.ndarray) -> None:
        digest = hashlib.blake2b(np.ascontiguousarray(output).tobytes(), digest_size=16).digest()
        self.first = self.first or digest
        self.count += 1
        self.mismatches += digest != self.first
        self.nan = max(self.nan, int(np.isnan(output).sum()))
        self.inf = max(self.inf, int(np.isinf(output).sum()))
        abs_err, rel_err = tile_errors(output, self.tiles)
        self.worst_abs, self.worst_rel = max(self.worst_abs, abs_err), max(self.worst_rel, rel_err)

    def fields(self) -> dict[str, object]:
        return {"max_abs_error": self.worst_abs, "max_rel_error": self.worst_rel, "nan_count": self.nan,
                "inf_count": self.inf, "mismatched_iterations": self.mismatches}


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def burn_core(
    kernel: Kernel,
    plan: GemmPlan,
    tiles: tuple[ReferenceTile, ...],
    *,
    core: int,
    device: int,
    repeat: int,
    warmup_s: float,
    duration_s: float,
    peak_tflops: float,
    clock: Callable[[], float] = time.perf_counter,
    phase: Callable[[str], None] = lambda _: None,
) -> CoreResult:
    """Drive ``kernel`` for the configured times and judge what it measured."""
    outputs = _Outputs(tiles)
    variants = sorted({1, repeat})
    start = clock()
    for r in variants:  # load or compile here, outside any timing
        outputs.check(kernel.launch(r))
    first_call = clock() - start

    phase("warming up")
    warm_start = clock()
    try:
        kernel.device_seconds(repeat, 1)
        timing, detail, host_overhead = DEVICE, "", None
    except DeviceTimingUnavailable as unavailable:
        timing, detail, host_overhead = HOST, f"device timing unavailable ({unavailable}); ", []
    launches = 0
    while launches < MIN_WARMUP_LAUNCHES or clock() - warm_start < warmup_s:
        if host_overhead is None:
            kernel.device_seconds(repeat, DEVICE_BATCH)
        else:
            host_overhead.append(tuple(_timed(kernel, r, clock)[0] for r in variants))
        launches += 1

    invalid = None
    overhead = 0.0
    if timing == HOST:
        overhead, invalid, detail = _host_overhead(host_overhead, repeat, detail)
    else:
        detail = f"nrtpy device-side trace, batches of {DEVICE_BATCH} executions"

    phase("measuring")
    latencies: list[float] = []
    run_start = clock()
    while len(latencies) < MIN_ITERATIONS or clock() - run_start < duration_s:
        if timing == DEVICE:
            seconds, output = kernel.device_seconds(repeat, DEVICE_BATCH)
            if len(seconds) != DEVICE_BATCH:
                invalid = invalid or (f"the device trace reported {len(seconds)} executions for "
                                      f"{DEVICE_BATCH} (several events per execution?)")
            latencies += [s / repeat for s in seconds]
        else:
            elapsed, output = _timed(kernel, repeat, clock)
            latencies.append((elapsed - overhead) / repeat)
        outputs.check(output)

    noisy = sum(1 for s in latencies if not s > 0)
    if timing == HOST and noisy:
        detail += f"; {noisy} of {len(latencies)} launches read <= 0 (host noise above the GEMM time)"
    common = dict(core=core, device=device, timing=timing, timing_detail=detail,
                  first_call_seconds=first_call, iterations=len(latencies), **outputs.fields())
    invalid = invalid or _implausible(latencies, plan, timing, peak_tflops, overhead)
    if invalid:
        return CoreResult(**common, measurement_invalid=invalid)
    # Device time is free of host noise, so every execution counts; host time is not, and 128
    # workers share the host, so the median launch stands for the core.
    per_gemm = statistics.fmean(latencies) if timing == DEVICE else statistics.median(latencies)
    return CoreResult(**common, tflops=plan.flops / per_gemm / 1e12,
                      latency_p50_ms=_percentile(latencies, 50) * 1e3,
                      latency_p99_ms=_percentile(latencies, 99) * 1e3)


def _timed(kernel: Kernel, repeat: int, clock: Callable[[], float]) -> tuple[float, np.ndarray]:
    start = clock()
    output = kernel.launch(repeat)
    return clock() - start, output


def _host_overhead(pairs: list[tuple[float, ...]], repeat: int, detail: str) -> tuple[float, str | None, str]:
    """(launch overhead to subtract, why it cannot be estimated, timing detail) from warm-up
    launches of 1 and of ``repeat`` GEMMs."""
    if repeat == 1:
        return 0.0, None, detail + "host wall clock; repeat 1, so launch overhead is included"
    singles, repeats = (statistics.median(samples) for samples in zip(*pairs))
    per_gemm = (repeats - singles) / (repeat - 1)
    if per_gemm <= 0:
        return 0.0, (f"launches of {repeat} GEMMs (median {_ms(repeats)}) were not slower than launches "
                     f"of 1 ({_ms(singles)}): launch overhead cannot be told from the GEMM"), detail
    overhead = max(0.0, singles - per_gemm)
    return overhead, None, detail + (f"host wall clock, median of launches, {_ms(overhead)} launch overhead "
                                     f"subtracted (from {len(pairs)} warm-up pairs)")


def _implausible(latencies: list[float], plan: GemmPlan, timing: str, peak_tflops: float,
                 overhead: float) -> str | None:
    """Why these latencies cannot be a real core's, or None. A device timer never reads <= 0; a
    host-timed launch may, where host noise exceeds the GEMM, but never the median of them."""
    bad = [s for s in latencies if not s > 0]
    if timing == DEVICE and bad:
        return f"{len(bad)} of {len(latencies)} device-timed GEMM latencies were not positive"
    per_gemm = statistics.fmean(latencies) if timing == DEVICE else statistics.median(latencies)
    if not per_gemm > 0:
        return (f"the median GEMM latency was not positive after subtracting {_ms(overhead)} of launch "
                f"overhead ({len(bad)} of {len(latencies)} launches)")
    tflops = plan.flops / per_gemm / 1e12
    if tflops > PLAUSIBLE_PEAK_MULTIPLE * peak_tflops:
        return (f"{tflops:.4g} TFLOPS ({_ms(per_gemm)} per GEMM, {timing} timing) is above "
                f"{PLAUSIBLE_PEAK_MULTIPLE:g} x the {peak_tflops:.1f} TFLOPS peak")
    return None
