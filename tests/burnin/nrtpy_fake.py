"""A stand-in for ``nrtpy``, the Neuron runtime's Python API, following its reference pages
(aws-neuron-sdk neuron-runtime/nrtpy/model.rst, tensor.rst, nrtpy-troubleshooting.rst).

It loads the emulated NEFFs trn_burnin.emulation leaves in NKI_ARTIFACTS_DIR and executes them by
running the kernel they name on the emulation; time passes on the test's fake clock. Documented
behaviour it keeps: inputs keyed by the NEFF's input names, auto-allocated outputs returned with a
void dtype, ``benchmark`` in ms with ``durations_ms`` per iteration, ValueError for a bad mode or
``benchmark_iter < 1``, RuntimeError in device mode when no execution events are captured.
Installed for a test as ``sys.modules["nrtpy"]``; ``RUNTIME`` is what the test sets.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trn_burnin.catalog import CATALOG
from trn_burnin.emulation import EMULATED_NEFF_VERSION, Emulator

GENERATIONS = {spec.core.name: spec.core for spec in CATALOG.values()}


@dataclass
class Runtime:
    """The fake device: how long a GEMM and a launch take, and whether device tracing works."""

    clock: list  # [seconds], shared with the test
    gemm_seconds: float
    launch_overhead_seconds: float = 0.01
    tracing: bool = True
    events_per_execution: int = 1  # a multi-subgraph NEFF emits several


RUNTIME: Runtime | None = None


@dataclass(frozen=True)
class TensorMetadata:
    shape: tuple[int, ...]
    size: int


class NrtpyTensor:
    def __init__(self, array: np.ndarray, name: str | None):
        self._array, self.name = array, name

    @classmethod
    def from_numpy(cls, array: np.ndarray, name: str | None = None, core_id: int = 0) -> "NrtpyTensor":
        del core_id
        return cls(np.array(array), name)

    def write_from_numpy(self, array: np.ndarray) -> None:
        self._array[...] = array

    def numpy(self) -> np.ndarray:
        return self._array


@dataclass(frozen=True)
class BenchmarkResult:
    mean_ms: float
    min_ms: float
    max_ms: float
    std_dev_ms: float
    iterations: int
    warmup_iterations: int
    durations_ms: list[float]


class NrtpyModel:
    def __init__(self, neff: dict, entry, arrays: dict):
        self._neff, self._entry = neff, entry
        self.input_tensors_info = {name: TensorMetadata(a.shape, a.nbytes) for name, a in arrays.items()}
        self.output_tensors_info = {name: TensorMetadata((), 0) for name in neff["outputs"]}

    @classmethod
    def load_from_neff(cls, neff_path, name=None, core_id=0, cc_enabled=False, rank_id=0, world_size=1):
        del name, core_id, cc_enabled, rank_id, world_size
        neff = json.loads(Path(neff_path).read_text())
        assert neff["emulated_neff"] == EMULATED_NEFF_VERSION
        emulator = Emulator(GENERATIONS[neff["core"]])
        entry = getattr(emulator.load_kernel(), neff["kernel"])
        return cls(neff, entry, {name: np.zeros(1) for name in neff["inputs"]})

    @property
    def _repeat(self) -> int:
        return self._neff["kwargs"].get("repeat", 1)

    def _execute(self, inputs: dict) -> np.ndarray:
        if set(inputs) != set(self._neff["inputs"]):
            raise ValueError(f"inputs {sorted(inputs)} do not match the NEFF's {self._neff['inputs']}")
        result = self._entry(*(inputs[name].numpy() for name in self._neff["inputs"]), **self._neff["kwargs"])
        RUNTIME.clock[0] += RUNTIME.launch_overhead_seconds + RUNTIME.gemm_seconds * self._repeat
        return result

    def _deliver(self, result: np.ndarray, outputs: dict | None) -> dict | None:
        (name,) = self._neff["outputs"]
        if outputs is None:  # auto-allocated: libnrt may not report the dtype
            return {name: NrtpyTensor(np.ascontiguousarray(result).view("V4"), name)}
        outputs[name].write_from_numpy(result)
        return None

    def __call__(self, inputs, outputs=None, save_trace=False, ntff_name=None):
        del save_trace, ntff_name
        return self._deliver(self._execute(inputs), outputs)

    def benchmark(self, inputs, outputs=None, warmup_iter=5, benchmark_iter=5, mode="device"):
        if mode not in ("device", "host"):
            raise ValueError(f"mode must be 'device' or 'host', got {mode!r}")
        if benchmark_iter < 1:
            raise ValueError("benchmark_iter must be at least 1")
        if mode == "device" and not RUNTIME.tracing:
            raise RuntimeError("no device execution events captured")
        result = self._execute(inputs)  # the emulated values; the fake clock pays for each iteration below
        RUNTIME.clock[0] += (warmup_iter + benchmark_iter - 1) * (
            RUNTIME.launch_overhead_seconds + RUNTIME.gemm_seconds * self._repeat)
        self._deliver(result, outputs)
        device_ms = RUNTIME.gemm_seconds * self._repeat * 1e3
        each = device_ms if mode == "device" else device_ms + RUNTIME.launch_overhead_seconds * 1e3
        events = benchmark_iter * (RUNTIME.events_per_execution if mode == "device" else 1)
        durations = [each / (RUNTIME.events_per_execution if mode == "device" else 1)] * events
        return BenchmarkResult(statistics.fmean(durations), min(durations), max(durations), 0.0, events,
                               warmup_iter, durations)
