"""One core's job, as the runner hands it to a worker process, and the worker's side of it.

A worker runs in one of two interpreters on the node. With nrtpy (the Neuron runtime's Python API,
which cannot share an environment with nki) it loads the NEFFs the runner compiled once for the
node and times them with nrtpy's device-side benchmark. Without it, it runs the kernel through nki,
which compiles it in this process at the first call, and times it on the host. Run as
``python -m trn_burnin.worker --core C --device D --job JSON``: it imports numpy and nrtpy or nki,
nothing else the node may lack. The result is the last line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import numpy as np

from trn_burnin.measure import CoreResult, DeviceTimingUnavailable, Kernel, burn_core
from trn_burnin.plan import GemmPlan
from trn_burnin.processes import PROGRESS_PREFIX
from trn_burnin.workload import Operands, make_operands, reference_tiles

NRTPY, NKI = "nrtpy", "nki"  # how a worker runs the kernel


@dataclass(frozen=True)
class WorkerJob:
    plan: GemmPlan
    repeat: int
    warmup_s: float
    duration_s: float
    sample_tiles: int
    seed: int
    peak_tflops: float  # the catalog peak the plausibility check holds results to
    loader: str = NKI
    neffs: dict[str, str] = field(default_factory=dict)  # str(repeat) -> compiled NEFF, for nrtpy

    @property
    def variants(self) -> tuple[int, ...]:
        """The repeat counts a run needs compiled: ``repeat``, and 1 to estimate host overhead."""
        return tuple(sorted({1, self.repeat}))

    def with_neffs(self, neffs: dict[int, str]) -> "WorkerJob":
        return replace(self, neffs={str(r): path for r, path in sorted(neffs.items())})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "WorkerJob":
        fields = json.loads(text)
        return cls(**{**fields, "plan": GemmPlan(**fields["plan"])})


def _result_array(plan: GemmPlan, raw: np.ndarray) -> np.ndarray:
    """A float32 [M, N] view of what the runtime returned (nrtpy may hand back void bytes)."""
    return np.ascontiguousarray(raw).view(np.float32).reshape(plan.m, plan.n)


class NkiKernel:
    """The kernel through the Neuron ``nki`` package: compiled in this process at its first call."""

    def __init__(self, plan: GemmPlan, operands: Operands, kernel_module: Any = None):
        module = kernel_module or importlib.import_module("trn_burnin.kernel")  # imports nki
        self._entry, self._plan, self._inputs = getattr(module, plan.kernel_name), plan, operands.inputs

    def launch(self, repeat: int) -> np.ndarray:
        return np.asarray(self._entry(*self._inputs.values(), **self._plan.kernel_kwargs(repeat)))

    def device_seconds(self, repeat: int, iterations: int) -> tuple[list[float], np.ndarray]:
        raise DeviceTimingUnavailable("nrtpy was not found on this node")


class NrtpyKernel:
    """The NEFFs compiled for this node, loaded on this worker's core with nrtpy.

    nrtpy.configure only sets NEURON_RT_VISIBLE_CORES, which the runner already set to this core,
    so ``core_id`` 0 is this core. Inputs are named as the kernel's parameters (the NEFF's names).
    """

    def __init__(self, plan: GemmPlan, operands: Operands, neffs: dict[str, str], nrtpy: Any = None):
        self._nrtpy = nrtpy or importlib.import_module("nrtpy")
        self._plan, self._models, self._outputs = plan, {}, {}
        tensor = self._nrtpy.NrtpyTensor
        self._inputs = {name: tensor.from_numpy(np.ascontiguousarray(array), name=name)
                        for name, array in operands.inputs.items()}
        for repeat, path in neffs.items():
            model = self._nrtpy.NrtpyModel.load_from_neff(path, core_id=0)
            if set(model.input_tensors_info) != set(self._inputs):
                raise RuntimeError(f"{path} has inputs {sorted(model.input_tensors_info)}, expected "
                                   f"{sorted(self._inputs)}")
            (output,) = model.output_tensors_info  # the kernel returns one tensor
            self._models[int(repeat)] = model
            self._outputs[int(repeat)] = {output: tensor.from_numpy(np.zeros((plan.m, plan.n), np.float32),
                                                                    name=output)}

    def _result(self, repeat: int) -> np.ndarray:
        (out,) = self._outputs[repeat].values()
        return _result_array(self._plan, out.numpy())

    def launch(self, repeat: int) -> np.ndarray:
        self._models[repeat](inputs=self._inputs, outputs=self._outputs[repeat])
        return self._result(repeat)

    def device_seconds(self, repeat: int, iterations: int) -> tuple[list[float], np.ndarray]:
        try:
            stats = self._models[repeat].benchmark(self._inputs, outputs=self._outputs[repeat], warmup_iter=1,
                                                   benchmark_iter=iterations, mode="device")
        except RuntimeError as error:  # documented: no device execution events captured
            raise DeviceTimingUnavailable(f"nrtpy device mode: {error}") from error
        return [ms / 1e3 for ms in stats.durations_ms], self._result(repeat)


KernelFactory = Callable[[WorkerJob, Operands], Kernel]


def default_kernel(job: WorkerJob, operands: Operands) -> Kernel:
    if job.loader == NRTPY:
        return NrtpyKernel(job.plan, operands, job.neffs)
    return NkiKernel(job.plan, operands)


def _report_phase(name: str) -> None:
    print(PROGRESS_PREFIX + name, file=sys.stderr, flush=True)


def run_worker(job: WorkerJob, core: int, device: int, kernel: KernelFactory = default_kernel,
               phase: Callable[[str], None] = _report_phase, **timing: Any) -> CoreResult:
    """Burn one core; any failure to build, load, compile or run becomes the result's ``error``.
    ``timing`` (tests): burn_core's clock."""
    try:
        operands = make_operands(job.plan, job.seed)
        tiles = reference_tiles(operands, job.plan, job.sample_tiles, job.seed)
        return burn_core(kernel(job, operands), job.plan, tiles, core=core, device=device, repeat=job.repeat,
                         warmup_s=job.warmup_s, duration_s=job.duration_s, peak_tflops=job.peak_tflops,
                         phase=phase, **timing)
    except Exception as error:  # the report must say why this core failed, whatever it was
        return CoreResult(core=core, device=device, error=f"{type(error).__name__}: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trn_burnin.worker",
                                     description="Burn one NeuronCore (started by `trn_burnin run`).")
    parser.add_argument("--core", type=int, required=True)
    parser.add_argument("--device", type=int, required=True)
    parser.add_argument("--job", required=True)
    args = parser.parse_args(argv)
    try:
        job = WorkerJob.from_json(args.job)
    except (ValueError, TypeError, KeyError) as error:
        parser.error(f"--job is not a worker job ({type(error).__name__}: {error})")
    print(json.dumps(run_worker(job, args.core, args.device).to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
