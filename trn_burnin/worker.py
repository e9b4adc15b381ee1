"""One core's job, as the runner hands it to a worker process, and the worker's side of it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from trn_burnin.measure import CoreResult, burn_core
from trn_burnin.plan import GemmPlan
from trn_burnin.workload import Operands, make_operands, reference_tiles

Execute = Callable[[int], np.ndarray]  # repeat count -> float32 result
ExecutorFactory = Callable[[GemmPlan, Operands], Execute]


@dataclass(frozen=True)
class WorkerJob:
    plan: GemmPlan
    repeat: int
    warmup_s: float
    duration_s: float
    sample_tiles: int
    seed: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "WorkerJob":
        fields = json.loads(text)
        return cls(**{**fields, "plan": GemmPlan(**fields["plan"])})


def nki_executor(plan: GemmPlan, operands: Operands) -> Execute:
    """The real kernel through the Neuron ``nki`` package (imported only here, on a Neuron node)."""
    from trn_burnin import kernel

    entry = getattr(kernel, plan.kernel_name)

    def execute(repeat: int) -> np.ndarray:
        return np.asarray(entry(*operands.inputs.values(), **plan.kernel_kwargs(repeat)))

    return execute


def run_worker(job: WorkerJob, core: int, device: int, executor: ExecutorFactory = nki_executor) -> CoreResult:
    """Burn one core; any failure to build, compile or run becomes the result's ``error``."""
    try:
        operands = make_operands(job.plan, job.seed)
        tiles = reference_tiles(operands, job.plan, job.sample_tiles, job.seed)
        return burn_core(executor(job.plan, operands), job.plan, tiles, core=core, device=device,
                         repeat=job.repeat, warmup_s=job.warmup_s, duration_s=job.duration_s)
    except Exception as error:  # the report must say why this core failed, whatever it was
        return CoreResult(core=core, device=device, error=f"{type(error).__name__}: {error}")
