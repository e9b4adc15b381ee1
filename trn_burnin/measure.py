"""One NeuronCore's burn-in loop: warm-up, timed iterations, and the checks on every output."""

from __future__ import annotations

import hashlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from trn_burnin.plan import GemmPlan
from trn_burnin.workload import ReferenceTile, tile_errors

MIN_ITERATIONS = 2  # repeatability needs at least two outputs to compare


@dataclass(frozen=True)
class CoreResult:
    """What one physical NeuronCore did; ``error`` set means it could not be measured."""

    core: int  # physical core index on the node (NEURON_RT_VISIBLE_CORES with LNC=1)
    device: int
    iterations: int = 0
    tflops: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    nan_count: int = 0
    inf_count: int = 0
    mismatched_iterations: int = 0  # outputs not bitwise identical to the first one
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def burn_core(
    execute: Callable[[int], np.ndarray],
    plan: GemmPlan,
    tiles: tuple[ReferenceTile, ...],
    *,
    core: int,
    device: int,
    repeat: int,
    warmup_s: float,
    duration_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> CoreResult:
    """Run ``execute(r)`` (one kernel launch doing the GEMM r times) for the configured time.

    Launch and host-transfer overhead is estimated during warm-up from launches of 1 and of
    ``repeat`` GEMMs and subtracted, so latency and TFLOPS describe the device's GEMM itself.
    """

    def timed(r: int) -> tuple[float, np.ndarray]:
        start = clock()
        output = execute(r)
        return clock() - start, output

    singles, repeats = [], []
    warm_start = clock()
    while not singles or clock() - warm_start < warmup_s:
        singles.append(timed(1)[0])
        repeats.append(timed(repeat)[0])
    overhead = 0.0
    if repeat > 1:
        per_gemm = (statistics.median(repeats) - statistics.median(singles)) / (repeat - 1)
        overhead = max(0.0, statistics.median(singles) - per_gemm)

    latencies: list[float] = []
    first_digest = None
    mismatches = nan_count = inf_count = 0
    worst_abs = worst_rel = 0.0
    run_start = clock()
    while len(latencies) < MIN_ITERATIONS or clock() - run_start < duration_s:
        seconds, output = timed(repeat)
        latencies.append(max(seconds - overhead, 1e-12) / repeat)
        digest = hashlib.blake2b(np.ascontiguousarray(output).tobytes(), digest_size=16).digest()
        first_digest = first_digest or digest
        mismatches += digest != first_digest
        nan_count = max(nan_count, int(np.isnan(output).sum()))
        inf_count = max(inf_count, int(np.isinf(output).sum()))
        abs_err, rel_err = tile_errors(output, tiles)
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
    return CoreResult(
        core=core,
        device=device,
        iterations=len(latencies),
        tflops=plan.flops * len(latencies) / sum(latencies) / 1e12,
        latency_p50_ms=_percentile(latencies, 50) * 1e3,
        latency_p99_ms=_percentile(latencies, 99) * 1e3,
        max_abs_error=worst_abs,
        max_rel_error=worst_rel,
        nan_count=nan_count,
        inf_count=inf_count,
        mismatched_iterations=mismatches,
    )
