"""Test doubles for the burn-in's device layer, shared by the burn-in and gate tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

from trn_burnin.artifacts import CompiledVariant
from trn_burnin.device import KernelLoader
from trn_burnin.measure import CoreResult
from trn_burnin.worker import NRTPY, WorkerJob


def neuron_ls_json(devices: int, logical_cores: int = 4, lnc: int = 2, skip: Sequence[int] = ()) -> str:
    """neuron-ls --json-output as documented (one entry per device, logical core counts)."""
    entries = [{"neuron_device": d, "bdf": f"{d:02x}:00.0", "nc_count": logical_cores,
                "logical_neuroncore_config": lnc, "memory_size": 103079215104,
                "neuroncore_ids": list(range(d * logical_cores, (d + 1) * logical_cores)),
                "connected_to": [], "neuron_processes": []}
               for d in range(devices) if d not in skip]
    return json.dumps(entries)


def healthy_result(core: int, device: int, tflops: float = 60.0) -> CoreResult:
    return CoreResult(core=core, device=device, timing="device", timing_detail="nrtpy device-side trace",
                      first_call_seconds=1.5, iterations=40, tflops=tflops, latency_p50_ms=2.3,
                      latency_p99_ms=2.4, max_abs_error=1e-5, max_rel_error=1e-7)


@dataclass
class FakeHost:
    """A node whose answers the test chooses; records the jobs it was asked to run."""

    listing: str = field(default_factory=lambda: neuron_ls_json(16))
    counters_before: dict = field(default_factory=lambda: {(0, "mem_ecc_uncorrected"): 0,
                                                           (0, "sram_ecc_uncorrected"): 0})
    counters_after: dict | None = None
    log: str = ""
    overrides: dict = field(default_factory=dict)  # core -> CoreResult
    loader: KernelLoader = KernelLoader(NRTPY, "/opt/trn-kit/nrtpy-venv/bin/python")
    compile_errors: dict = field(default_factory=dict)  # repeat -> error
    jobs: list = field(default_factory=list)
    compiles: list = field(default_factory=list)
    _reads: int = 0

    def neuron_ls(self) -> str:
        return self.listing

    def hw_counters(self) -> dict:
        self._reads += 1
        after = self.counters_before if self.counters_after is None else self.counters_after
        return dict(self.counters_before if self._reads == 1 else after)

    def kernel_log(self) -> str:
        return self.log

    def kernel_loader(self) -> KernelLoader:
        return self.loader

    def compile_kernels(self, job: WorkerJob, platform_target: str, progress) -> tuple[CompiledVariant, ...]:
        self.compiles.append((job, platform_target))
        return tuple(
            CompiledVariant(r, 40.0, None, self.compile_errors[r]) if r in self.compile_errors
            else CompiledVariant(r, 40.0, f"/tmp/trn-burnin-neff-x/repeat-{r}/kernel.neff")
            for r in job.variants)

    def run_cores(self, cores: Sequence[tuple[int, int]], job: WorkerJob, progress) -> list[CoreResult]:
        self.jobs.append((tuple(cores), job))
        progress(f"done: {len(cores)} of {len(cores)} cores")
        return [self.overrides.get(core, healthy_result(core, device)) for core, device in cores]

    def software_versions(self) -> dict:
        return {"python": "3.11", "nki": None, "neuronx-cc": None, "numpy": "2.4.6", "boto3": "1.44.5",
                "neuron_driver": None}

    def hostname(self) -> str:
        return "ip-10-0-0-1"
