"""EMULATION of the documented NKI semantics the burn-in kernel uses. Not Neuron's compiler or simulator.

It exists so that the real kernel source (trn_burnin/kernel.py) can run unchanged on a CPU:
``Emulator.load_kernel()`` executes that module with stand-in ``nki``, ``nki.language`` and
``nki.isa`` modules whose calls follow the NKI API reference of the pinned NKI 0.7 on numpy arrays,
and which enforce the documented hardware limits of the catalog's NeuronCore generation:

* on-chip tensors have at most pmax partitions; live SBUF fits the *usable* bytes per partition
  (``nl.tile_size.sbuf_fmax_bytes``: the raw partition less the compiler's reserve), PSUM tensors
  are whole banks and at most psum_banks of them are live;
* nc_matmul: stationary and moving in SBUF with equal partition sizes <= pmax, stationary free size
  <= stationary_fmax, moving free size <= moving_fmax, dst an FP32 PSUM tile of the product's shape;
  float8_e4m3fn (OCP FP8) only where the generation has it (NeuronCore-v4) and never mixed with the
  legacy float8_e4m3; perf_mode=double_row only where the generation has it, on FP8 tiles [P, 2, F];
* nc_matmul_mx only where the generation has it, with its data and scale layout;
* ``nl.fori_loop`` as the pinned NKI defines it: one body (traced once per iteration here, and
  required to trace the same instructions every time, since the device runs a single copy), the
  trip count from the bounds, a loop variable that is a device value host Python cannot read, a
  body that returns nothing and whose tensors do not outlive the loop. The program size
  (``EmulationStats.program_instructions``) counts the body once, whatever the trip count;
* the constructs the NKI documentation says fail to compile (COMPILE_FAILURES), checked on the
  kernel's source when it is loaded and on its calls;
* ``NKI_ARTIFACTS_DIR``, read when nki is imported (here: when the kernel is loaded): a kernel run
  then leaves ``kernel.neff`` there. The emulated NEFF is a JSON stand-in naming the kernel, its
  compile-time arguments and its inputs (the kernel's parameter names) and output (``output_0``).

A violation raises NkiLimitError. With ``compute=False`` no values are computed: tensors are
shape-only and the emulator just checks limits and counts DMA bytes and instructions, which is how
the benchmark measures the default shape quickly. It models no timing, no engine overlap and no
compiler scheduling: passing here is necessary, not sufficient, for the kernel to run on a device.
"""

from __future__ import annotations

import ast
import enum
import importlib.util
import inspect
import json
import math
import os
import sys
import types
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from trn_burnin.artifacts import ARTIFACTS_ENV, NEFF_NAME
from trn_burnin.catalog import NeuronCoreGeneration
from trn_burnin.numerics import (
    FLOAT8_E4M3, FLOAT8_E4M3FN, MX_GROUP_PARTITIONS, MX_SCALE_BIAS, bf16_values, mx_decode_data, round_bf16,
)

KERNEL_MODULE = "trn_burnin.kernel"
EMULATED_NEFF_VERSION = 1
NEFF_OUTPUT_NAME = "output_0"  # how the nrtpy tutorial's NKI kernel names its returned tensor


class NkiLimitError(ValueError):
    """The kernel asked for something the documented hardware or API does not allow."""


@dataclass(frozen=True)
class _DType:
    itemsize: int
    storage: type  # numpy dtype of the emulated values
    round: Callable[[np.ndarray], np.ndarray] | None  # None: integer, stored as is
    packed: int = 1  # x4 types hold four values per element


def _identity(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32)


DTYPES = {
    "float32": _DType(4, np.float32, _identity),
    "bfloat16": _DType(2, np.float32, round_bf16),
    "float8_e4m3": _DType(1, np.float32, FLOAT8_E4M3.round),
    "float8_e4m3fn": _DType(1, np.float32, FLOAT8_E4M3FN.round),
    "float8_e4m3fn_x4": _DType(4, np.float32, FLOAT8_E4M3FN.round, packed=4),
    "uint8": _DType(1, np.uint8, None),
    "uint16": _DType(2, np.uint16, None),
    "uint32": _DType(4, np.uint32, None),
}
_FLOAT8 = ("float8_e4m3", "float8_e4m3fn")
_MATMUL_INPUTS = ("float32", "bfloat16") + _FLOAT8
# Reinterpretations the runner relies on: raw bit patterns -> the operand type they encode.
_BIT_DECODERS = {
    ("uint16", "bfloat16"): bf16_values,
    ("uint8", "float8_e4m3"): FLOAT8_E4M3.decode,
    ("uint8", "float8_e4m3fn"): FLOAT8_E4M3FN.decode,
    ("uint32", "float8_e4m3fn_x4"): mx_decode_data,
}
_QUADRANT = 32
_INT32_MAX = 2**31 - 1


class Buffer:
    """nl.sbuf, nl.psum, nl.hbm, nl.shared_hbm, nl.private_hbm: objects, not strings."""

    def __init__(self, name: str, region: str):
        self.name, self.region = name, region

    def __repr__(self) -> str:
        return f"nl.{self.name}"


SBUF, PSUM, HBM = "sbuf", "psum", "hbm"
_BUFFERS = {name: Buffer(name, region) for name, region in (
    ("sbuf", SBUF), ("psum", PSUM), ("hbm", HBM), ("shared_hbm", HBM), ("private_hbm", HBM))}

# What the NKI documentation says runs on a CPU but fails to compile; each is refused here, with
# where it is written down. The static ones are checked on the kernel module's source.
COMPILE_FAILURES = {
    "is": "'is' / 'is not' are not supported; use == / != (nki/migration/index.rst, language restrictions)",
    "keyword_only": "keyword-only parameters ('*') are not supported in kernel signatures "
                    "(nki/migration/index.rst, language restrictions)",
    "decorator": "decorators on sub-kernels are not allowed (NKI 0.2.0 release notes)",
    "dict_keys": "dictionaries take only string keys (NKI 0.2.0 release notes)",
    "list_argument": "list kernel arguments are not supported; use tuples (nki/migration/index.rst)",
    "string_buffer": "string buffer names are rejected; use nl.sbuf, nl.psum, nl.shared_hbm (nki/migration/index.rst)",
    "output_buffer": "kernel outputs must be allocated with buffer=nl.shared_hbm (nki/migration/index.rst)",
    "unsupported_op": "works in simulation but fails when compiled (NKI 0.3.0 / 0.4.0 known issues)",
    "dynamic_range": "removed in NKI 0.7: use nl.fori_loop (Neuron 2.33 release notes)",
    "loop_variable": "the loop variable is a device register: host-side Python cannot read it, e.g. "
                     "'if i == 0:' (nki/deep-dives/nki-dynamic-loops.rst)",
    "loop_return": "the fori_loop body function cannot return a value (nki/migration/index.rst, "
                   "rules for migrated loops)",
    "loop_tensor": "tensors declared inside a fori_loop body cannot be referenced outside of the loop "
                   "(nki/migration/index.rst, rules for migrated loops)",
    "loop_bounds": "fori_loop's step must be a positive compile-time integer and a bound must be "
                   "32-bit (nki.language.fori_loop reference)",
    # Not in the documentation either way; the kit keeps to the official kernels' style.
    "raise": "raise in a kernel: official kernels check with assert, which the NKI language guide "
             "lists as supported (kit rule)",
}


class MatmulPerfMode(enum.Enum):
    none = "none"
    double_row = "double_row"


@dataclass(frozen=True)
class EmulationStats:
    """What one emulated run did."""

    program_instructions: int  # NKI instructions in the compiled program: a fori_loop body counts once
    executed_instructions: int  # what the device runs: a fori_loop body counts once per trip
    hbm_to_sbuf_bytes: int
    sbuf_to_hbm_bytes: int
    dma_count: int
    matmul_count: int
    full_tile_matmuls: int
    max_psum_dst_bytes_per_partition: int
    peak_sbuf_bytes_per_partition: int
    peak_psum_banks: int

    @property
    def hbm_bytes(self) -> int:
        return self.hbm_to_sbuf_bytes + self.sbuf_to_hbm_bytes

    @property
    def full_tile_fraction(self) -> float:
        return self.full_tile_matmuls / self.matmul_count if self.matmul_count else 0.0


class _Allocation:
    """One nl.ndarray's on-chip footprint; released when the last view of it is collected."""

    def __init__(self, emulator: "Emulator", buffer: str, bytes_per_partition: int, banks: int):
        self.buffer, self.bytes, self.banks = buffer, bytes_per_partition, banks
        emulator._reserve(self)
        weakref.finalize(self, emulator._release, buffer, bytes_per_partition, banks)


@dataclass
class _LoopScope:
    """The tensors one fori_loop body declares: usable until the loop ends."""

    closed: bool = False


@dataclass(frozen=True)
class _Home:
    """Where a tensor was declared: its buffer (as written in the kernel) and its loop, if any."""

    buffer_name: str  # "sbuf", "shared_hbm", ... or "argument" for a kernel input
    scope: _LoopScope | None = None


_ARGUMENT = _Home("argument")


class Tensor:
    """An emulated NkiTensor: a numpy view plus NKI dtype and memory region."""

    def __init__(self, data: np.ndarray, dtype: str, buffer: str, shape_only: bool, home: _Home = _ARGUMENT,
                 allocation: Any = None, started: np.ndarray | None = None):
        self.data, self.dtype, self.buffer, self.shape_only = data, dtype, buffer, shape_only
        self._home = home
        self._allocation = allocation  # keeps the footprint live while any view exists
        self._started = started  # PSUM only: which elements a matmul has written

    @property
    def _packed(self) -> int:
        return DTYPES[self.dtype].packed

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape[:-1] if self._packed > 1 else self.data.shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def on_chip(self) -> bool:
        return self.buffer in (SBUF, PSUM)

    @property
    def partitions(self) -> int:
        return self.shape[0]

    @property
    def free_size(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].itemsize

    def _derived(self, data: np.ndarray, dtype: str, started: np.ndarray | None = None) -> "Tensor":
        return Tensor(data, dtype, self.buffer, self.shape_only, self._home, self._allocation, started)

    def __getitem__(self, key: Any) -> "Tensor":
        key = list(key) if isinstance(key, tuple) else [key]
        if any(isinstance(index, LoopVariable) for index in key):
            raise NkiLimitError(COMPILE_FAILURES["loop_variable"])
        if Ellipsis in key:
            at = key.index(Ellipsis)
            key[at:at + 1] = [slice(None)] * (self.ndim - len(key) + 1)
        if len(key) > self.ndim:
            raise NkiLimitError(f"index {tuple(key)} has more dimensions than shape {self.shape}")
        for dim, (index, size) in enumerate(zip(key, self.shape)):
            if isinstance(index, slice) and (index.stop or 0) > size:
                raise NkiLimitError(f"slice {index} is out of bounds for dimension {dim} of {self.shape}")
        if self.on_chip and isinstance(key[0], int):
            key[0] = slice(key[0], key[0] + 1)  # on-chip tensors keep their partition dimension
        index = tuple(key) + ((slice(None),) if self._packed > 1 else ())
        started = None if self._started is None else self._started[index]
        return self._derived(self.data[index], self.dtype, started)

    def view(self, dtype: Any) -> "Tensor":
        if dtype == self.dtype:
            return self
        decode = _BIT_DECODERS.get((self.dtype, dtype))
        if decode is None or self.buffer != HBM:
            raise NotImplementedError(f"emulation reinterprets only HBM bit patterns, not {self.dtype} as {dtype}")
        # HBM operands are read-only in the kernel, so a decoded copy behaves like a view.
        shape = self.data.shape + ((DTYPES[dtype].packed,) if DTYPES[dtype].packed > 1 else ())
        data = np.broadcast_to(np.float32(0), shape) if self.shape_only else decode(self.data)
        return self._derived(data, dtype)

    def values(self) -> np.ndarray:
        return self.data


class LoopVariable:
    """fori_loop's loop variable: a device value. Host Python may pass it on, never read it."""

    def _refuse(self, *_: Any) -> Any:
        raise NkiLimitError(COMPILE_FAILURES["loop_variable"])

    __bool__ = __int__ = __index__ = __float__ = _refuse
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse  # type: ignore[assignment]
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __floordiv__ = __mod__ = _refuse
    __hash__ = None  # type: ignore[assignment]


class _Static(ast.NodeVisitor):
    """The source-level COMPILE_FAILURES of one kernel module."""

    def __init__(self, filename: str):
        self.filename, self.found = filename, []

    def _add(self, node: ast.AST, rule: str) -> None:
        self.found.append(f"{self.filename}:{node.lineno}: {COMPILE_FAILURES[rule]}")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        jit = [d for d in node.decorator_list if ast.unparse(d) in ("nki.jit", "nki.jit()")]
        if len(jit) != len(node.decorator_list):
            self._add(node, "decorator")
        if jit and (node.args.kwonlyargs or node.args.vararg is not None):
            self._add(node, "keyword_only")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if any(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            self._add(node, "is")
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        if any(isinstance(k, ast.Constant) and not isinstance(k.value, str) for k in node.keys):
            self._add(node, "dict_keys")
        self.generic_visit(node)

    def visit_Raise(self, node: ast.Raise) -> None:
        self._add(node, "raise")


def check_kernel_source(source: str, filename: str) -> list[str]:
    """The COMPILE_FAILURES found in a kernel module's source, one line each."""
    checker = _Static(filename)
    checker.visit(ast.parse(source, filename))
    return checker.found


class Emulator:
    """Stand-in NKI modules for one NeuronCore generation, with counters."""

    def __init__(self, core: NeuronCoreGeneration, compute: bool = True):
        self.core, self.compute = core, compute
        self.artifacts_dir: str | None = None  # NKI_ARTIFACTS_DIR as it was when the kernel was loaded
        self._live = {SBUF: 0, PSUM: 0}
        self._peak = {SBUF: 0, PSUM: 0}
        self._counts = dict.fromkeys(
            ("program_instructions", "executed_instructions", "hbm_to_sbuf_bytes", "sbuf_to_hbm_bytes",
             "dma_count", "matmul_count", "full_tile_matmuls", "max_psum_dst_bytes_per_partition"), 0)
        self._scopes: list[_LoopScope] = []
        # A fori_loop's first trip records what its body issues; later trips must issue the same.
        self._trace: list[tuple] | None = None
        self._expected: Iterator[tuple] | None = None

    # -- limits -----------------------------------------------------------------------------
    @property
    def bank_bytes(self) -> int:
        return self.core.psum_bank_bytes_per_partition

    @property
    def sbuf_limit(self) -> int:
        return self.core.usable_sbuf_bytes_per_partition

    @property
    def full_moving(self) -> int:
        return min(self.core.moving_fmax, self.bank_bytes // DTYPES["float32"].itemsize)

    def _reserve(self, allocation: _Allocation) -> None:
        amount = allocation.banks if allocation.buffer == PSUM else allocation.bytes
        limit = self.core.psum_banks if allocation.buffer == PSUM else self.sbuf_limit
        if self._live[allocation.buffer] + amount > limit:
            unit = "banks" if allocation.buffer == PSUM else "usable bytes per partition"
            raise NkiLimitError(
                f"{allocation.buffer.upper()} overflow on NeuronCore-{self.core.name}: "
                f"{self._live[allocation.buffer]} live + {amount} > {limit} {unit}")
        self._live[allocation.buffer] += amount
        self._peak[allocation.buffer] = max(self._peak[allocation.buffer], self._live[allocation.buffer])

    def _release(self, buffer: str, bytes_per_partition: int, banks: int) -> None:
        self._live[buffer] -= banks if buffer == PSUM else bytes_per_partition

    def stats(self) -> EmulationStats:
        return EmulationStats(**self._counts, peak_sbuf_bytes_per_partition=self._peak[SBUF],
                              peak_psum_banks=self._peak[PSUM])

    def _storage(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        spec = DTYPES[dtype]
        full = tuple(shape) + ((spec.packed,) if spec.packed > 1 else ())
        if self.compute:
            return np.zeros(full, spec.storage)
        return np.broadcast_to(np.zeros((), spec.storage), full)  # shape only, no memory

    def _write(self, dst: Tensor, values: np.ndarray) -> None:
        if not self.compute:
            return
        spec = DTYPES[dst.dtype]
        values = np.asarray(values).reshape(dst.data.shape)
        dst.data[...] = spec.round(values) if spec.round else values.astype(spec.storage)
        if dst._started is not None:
            dst._started[...] = False  # a non-matmul write starts no accumulation

    def _issue(self, op: str, *operands: Any) -> None:
        """Account one NKI instruction: in the program once, on the device once per execution."""
        for tensor in operands:
            if isinstance(tensor, Tensor) and tensor._home.scope is not None and tensor._home.scope.closed:
                raise NkiLimitError(f"{op}: {COMPILE_FAILURES['loop_tensor']}")
        self._counts["executed_instructions"] += 1
        signature = (op, *(t.shape for t in operands if isinstance(t, Tensor)))
        if self._expected is not None:
            if next(self._expected, None) != signature:
                raise NkiLimitError(
                    f"fori_loop body issued {signature} where its first trip did not: the device runs one "
                    "copy of the body, so the body must not depend on host-side state")
            return
        self._counts["program_instructions"] += 1
        if self._trace is not None:
            self._trace.append(signature)

    # -- nki.language -----------------------------------------------------------------------
    def ndarray(self, shape: tuple[int, ...], dtype: str, buffer: Any = None, name: str = "",
                address: Any = None) -> Tensor:
        del name, address
        buffer = _BUFFERS["sbuf"] if buffer is None else buffer
        if not isinstance(buffer, Buffer):
            raise NkiLimitError(f"buffer={buffer!r}: {COMPILE_FAILURES['string_buffer']}")
        if dtype not in DTYPES:
            raise NotImplementedError(f"emulation has no dtype {dtype}")
        home = _Home(buffer.name, self._scopes[-1] if self._scopes else None)
        tensor = Tensor(self._storage(tuple(shape), dtype), dtype, buffer.region, not self.compute, home)
        if not tensor.on_chip:
            return tensor
        if tensor.partitions > self.core.pmax:
            raise NkiLimitError(f"{buffer.region.upper()} tensor {tuple(shape)} has {tensor.partitions} "
                                f"partitions; pmax is {self.core.pmax}")
        per_partition = tensor.free_size * DTYPES[dtype].itemsize
        banks = math.ceil(per_partition / self.bank_bytes) if tensor.buffer == PSUM else 0
        tensor._allocation = _Allocation(self, tensor.buffer, per_partition, banks)
        if tensor.buffer == PSUM:
            tensor._started = np.zeros(tensor.data.shape, bool) if self.compute else None
        return tensor

    def fori_loop(self, lower: Any, upper: Any, body_fun: Callable[[Any], None], step: int = 1) -> None:
        """nl.fori_loop of NKI 0.7: a hardware loop over one copy of ``body_fun``."""
        bounds_ok = all(isinstance(b, int) and not isinstance(b, bool) and -_INT32_MAX - 1 <= b <= _INT32_MAX
                        for b in (lower, upper))
        if not bounds_ok or not isinstance(step, int) or isinstance(step, bool) or step < 1:
            if any(isinstance(b, LoopVariable) for b in (lower, upper)):
                raise NotImplementedError("emulation covers fori_loop with compile-time bounds only")
            raise NkiLimitError(f"fori_loop({lower!r}, {upper!r}, step={step!r}): {COMPILE_FAILURES['loop_bounds']}")
        trips = len(range(lower, upper, step))
        if self._scopes or trips == 0:
            raise NotImplementedError("emulation covers fori_loops that are not nested and run at least once")
        self._issue("fori_loop")
        scope = _LoopScope()
        self._scopes.append(scope)
        first: tuple = ()
        try:
            for trip in range(trips):
                # The first trip traces the program's one body; every later trip must issue the same.
                self._trace, self._expected = ([], None) if trip == 0 else (None, iter(first))
                if body_fun(LoopVariable()) is not None:
                    raise NkiLimitError(COMPILE_FAILURES["loop_return"])
                if trip == 0:
                    first = tuple(self._trace)
                elif next(self._expected, None) is not None:
                    raise NkiLimitError(f"fori_loop trip {trip + 1} issued fewer instructions than the first")
        finally:
            self._scopes.pop()
            scope.closed = True
            self._trace, self._expected = None, None

    @staticmethod
    def _unsupported(name: str) -> Callable[..., None]:
        def refuse(*_: Any, **__: Any) -> None:
            raise NkiLimitError(f"nl.{name}: {COMPILE_FAILURES['unsupported_op']}")
        return refuse

    # -- nki.isa ----------------------------------------------------------------------------
    def dma_copy(self, dst: Tensor, src: Tensor, **options: Any) -> None:
        del options
        self._issue("dma_copy", dst, src)
        if PSUM in (dst.buffer, src.buffer):
            raise NkiLimitError("dma_copy moves data between HBM and SBUF, not PSUM")
        if math.prod(dst.shape) != math.prod(src.shape):
            raise NkiLimitError(f"dma_copy element counts differ: dst {dst.shape}, src {src.shape}")
        self._counts["dma_count"] += 1
        if src.buffer == HBM and dst.buffer == SBUF:
            self._counts["hbm_to_sbuf_bytes"] += src.nbytes
        elif src.buffer == SBUF and dst.buffer == HBM:
            self._counts["sbuf_to_hbm_bytes"] += dst.nbytes
        self._write(dst, src.values())

    def _same_partitions(self, op: str, *tiles: Tensor) -> None:
        if any(not t.on_chip for t in tiles):
            raise NkiLimitError(f"{op} works on SBUF/PSUM tiles only")
        if len({(t.partitions, t.free_size) for t in tiles}) != 1:
            raise NkiLimitError(f"{op} tiles differ in shape: {[t.shape for t in tiles]}")

    def tensor_copy(self, dst: Tensor, src: Tensor, **options: Any) -> None:
        del options
        self._issue("tensor_copy", dst, src)
        self._same_partitions("tensor_copy", dst, src)
        self._write(dst, src.values())

    def tensor_tensor(self, dst: Tensor, data1: Tensor, data2: Tensor, op: Callable, **options: Any) -> None:
        del options
        self._issue("tensor_tensor", dst, data1, data2)
        self._same_partitions("tensor_tensor", dst, data1, data2)
        if self.compute:
            self._write(dst, op(data1.values().astype(np.float32),
                                data2.values().astype(np.float32).reshape(data1.data.shape)))

    def memset(self, dst: Tensor, value: float, **options: Any) -> None:
        del options
        self._issue("memset", dst)
        if self.compute:
            self._write(dst, np.full(dst.data.shape, value))

    def _check_operands(self, op: str, dst: Tensor, stationary: Tensor, moving: Tensor) -> None:
        core = self.core
        if stationary.buffer != SBUF or moving.buffer != SBUF or dst.buffer != PSUM:
            raise NkiLimitError(f"{op} reads stationary and moving from SBUF and writes dst to PSUM")
        if stationary.partitions != moving.partitions or stationary.partitions > core.pmax:
            raise NkiLimitError(f"{op} partition sizes {stationary.partitions} and {moving.partitions} "
                                f"must match and be <= pmax {core.pmax}")
        stat_free, mov_free = stationary.shape[-1], moving.shape[-1]
        if stat_free > core.stationary_fmax:
            raise NkiLimitError(f"{op} stationary free size {stat_free} > {core.stationary_fmax} "
                                f"on NeuronCore-{core.name}")
        if mov_free > core.moving_fmax:
            raise NkiLimitError(f"{op} moving free size {mov_free} > {core.moving_fmax} "
                                f"on NeuronCore-{core.name}")
        if dst.shape != (stat_free, mov_free) or dst.dtype != "float32":
            raise NkiLimitError(f"{op} dst must be a float32 {(stat_free, mov_free)} PSUM tile, "
                                f"got {dst.dtype} {dst.shape}")
        dst_bytes = dst.free_size * DTYPES[dst.dtype].itemsize
        counts = self._counts
        counts["matmul_count"] += 1
        counts["max_psum_dst_bytes_per_partition"] = max(counts["max_psum_dst_bytes_per_partition"], dst_bytes)
        if (stationary.partitions, stat_free, mov_free) == (core.pmax, core.stationary_fmax, self.full_moving):
            counts["full_tile_matmuls"] += 1

    def _accumulate(self, dst: Tensor, product: np.ndarray, accumulate: bool | None) -> None:
        """accumulate=None: a matmul's first write to an element overwrites, later ones add."""
        started = dst._started
        if accumulate is True and not started.all():
            raise NkiLimitError("nc_matmul accumulate=True on PSUM no matmul has initialised")
        add = started if accumulate is None else np.full(started.shape, bool(accumulate))
        dst.data[...] = np.where(add, dst.data + product, product)
        started[...] = True

    def nc_matmul(self, dst: Tensor, stationary: Tensor, moving: Tensor, is_stationary_onezero: bool = False,
                  is_moving_onezero: bool = False, is_transpose: bool = False, accumulate: bool | None = None,
                  tile_position: tuple = (), tile_size: tuple = (), perf_mode: MatmulPerfMode = MatmulPerfMode.none,
                  name: str | None = None) -> None:
        del is_stationary_onezero, is_moving_onezero, name
        self._issue("nc_matmul", dst, stationary, moving)
        if is_transpose or tile_position or tile_size:
            raise NotImplementedError("emulation covers nc_matmul without transpose or PE tiling")
        for tile in (stationary, moving):
            if tile.dtype not in _MATMUL_INPUTS:
                raise NkiLimitError(f"nc_matmul does not take {tile.dtype} operands")
            if tile.dtype == "float8_e4m3fn" and not self.core.has_ocp_fp8:
                raise NkiLimitError(f"nc_matmul takes float8_e4m3fn only from NeuronCore-v4, "
                                    f"not on NeuronCore-{self.core.name}")
        if (stationary.dtype == "float32") != (moving.dtype == "float32"):
            raise NkiLimitError("nc_matmul: a float32 operand needs a float32 partner")
        if {stationary.dtype, moving.dtype} == set(_FLOAT8):
            raise NkiLimitError("nc_matmul: float8_e4m3 (legacy) and float8_e4m3fn cannot be mixed")
        double_row = perf_mode == MatmulPerfMode.double_row
        rows = 2 if double_row else 1
        if double_row:
            if not self.core.fp8_double_row:
                raise NkiLimitError(f"NeuronCore-{self.core.name} has no double_row performance mode")
            if stationary.dtype not in _FLOAT8 or moving.dtype not in _FLOAT8:
                raise NkiLimitError("double_row needs FP8 operands")
        for tile in (stationary, moving):
            if tile.ndim != 2 + (rows > 1) or (rows > 1 and tile.shape[1] != rows):
                raise NkiLimitError(f"nc_matmul operand shape {tile.shape} does not fit perf_mode {perf_mode.name}")
        self._check_operands("nc_matmul", dst, stationary, moving)
        if self.compute:
            stat = stationary.values().reshape(stationary.partitions * rows, -1).astype(np.float32)
            mov = moving.values().reshape(moving.partitions * rows, -1).astype(np.float32)
            self._accumulate(dst, stat.T @ mov, accumulate)

    def _mx_scale_factors(self, scale: np.ndarray, partitions: int) -> np.ndarray:
        """Per-partition factor 2^(e - 127) of each value's group, from the quadrant layout: the
        scales of a quadrant's 4 groups sit in its first 4 partitions."""
        p = np.arange(partitions)
        rows = (p // _QUADRANT) * _QUADRANT + (p % _QUADRANT) // MX_GROUP_PARTITIONS
        return np.exp2(scale[rows].astype(np.float64) - MX_SCALE_BIAS)

    def nc_matmul_mx(self, dst: Tensor, stationary: Tensor, moving: Tensor, stationary_scale: Tensor,
                     moving_scale: Tensor, tile_position: Any = None, tile_size: Any = None,
                     accumulate: bool | None = None, name: str | None = None) -> None:
        del name
        self._issue("nc_matmul_mx", dst, stationary, moving, stationary_scale, moving_scale)
        if tile_position or tile_size:
            raise NotImplementedError("emulation covers nc_matmul_mx without PE tiling")
        if not self.core.has_matmul_mx:
            raise NkiLimitError(f"nc_matmul_mx is not available on NeuronCore-{self.core.name}")
        partitions = stationary.partitions
        if partitions % _QUADRANT or partitions > self.core.pmax:
            raise NkiLimitError(f"nc_matmul_mx partition size {partitions} must be a multiple of "
                                f"{_QUADRANT} and <= {self.core.pmax}")
        for data, scale in ((stationary, stationary_scale), (moving, moving_scale)):
            if data.dtype != "float8_e4m3fn_x4" or scale.dtype != "uint8" or scale.buffer != SBUF:
                raise NkiLimitError("nc_matmul_mx takes float8_e4m3fn_x4 data with uint8 SBUF scales")
            if scale.shape != data.shape:
                raise NkiLimitError(f"nc_matmul_mx scale shape {scale.shape} != data shape {data.shape}")
        if stationary.shape[-1] % 2:
            raise NkiLimitError("nc_matmul_mx stationary free size must be even")
        self._check_operands("nc_matmul_mx", dst, stationary, moving)
        if self.compute:
            stat = stationary.values() * self._mx_scale_factors(stationary_scale.values(), partitions)[..., None]
            mov = moving.values() * self._mx_scale_factors(moving_scale.values(), partitions)[..., None]
            self._accumulate(dst, np.einsum("pmj,pnj->mn", stat, mov).astype(np.float32), accumulate)

    # -- module set -------------------------------------------------------------------------
    def modules(self) -> dict[str, types.ModuleType]:
        core = self.core
        language = types.ModuleType("nki.language", "EMULATION of nki.language (trn_burnin.emulation)")
        for dtype in DTYPES:
            setattr(language, dtype, dtype)
        for name, buffer in _BUFFERS.items():
            setattr(language, name, buffer)
        language.ndarray = self.ndarray
        language.fori_loop = self.fori_loop
        language.add, language.subtract, language.multiply = np.add, np.subtract, np.multiply
        for name in ("fmod", "mod", "divide", "power"):
            setattr(language, name, self._unsupported(name))
        language.dynamic_range = self._removed_dynamic_range
        language.affine_range = language.sequential_range = language.static_range = range
        language.tile_size = types.SimpleNamespace(
            pmax=core.pmax, gemm_stationary_fmax=core.stationary_fmax, gemm_moving_fmax=core.moving_fmax,
            psum_bank_fmax=self.bank_bytes // DTYPES["float32"].itemsize, psum_num_banks=core.psum_banks,
            sbuf_fmax_bytes=self.sbuf_limit, sbuf_size_bytes=core.sbuf_bytes)
        isa = types.ModuleType("nki.isa", "EMULATION of nki.isa (trn_burnin.emulation)")
        isa.matmul_perf_mode = MatmulPerfMode
        for op in ("dma_copy", "tensor_copy", "tensor_tensor", "memset", "nc_matmul", "nc_matmul_mx"):
            setattr(isa, op, getattr(self, op))
        nki = types.ModuleType("nki", "EMULATION of nki (trn_burnin.emulation)")
        nki.language, nki.isa, nki.jit = language, isa, self.jit
        return {"nki": nki, "nki.language": language, "nki.isa": isa}

    @staticmethod
    def _removed_dynamic_range(*_: Any) -> None:
        raise NkiLimitError(f"nl.dynamic_range: {COMPILE_FAILURES['dynamic_range']}")

    def jit(self, fn: Callable | None = None, **options: Any) -> Callable:
        """@nki.jit: numpy arguments become HBM tensors; the returned shared_hbm tensor becomes numpy."""
        del options
        if fn is None:
            return self.jit

        def run(*args: Any, **kwargs: Any) -> np.ndarray:
            if any(isinstance(a, list) for a in (*args, *kwargs.values())):
                raise NkiLimitError(COMPILE_FAILURES["list_argument"])
            wrapped = [Tensor(a, a.dtype.name, HBM, not self.compute) if isinstance(a, np.ndarray) else a
                       for a in args]
            result = fn(*wrapped, **kwargs)
            if not isinstance(result, Tensor) or result._home.buffer_name != "shared_hbm":
                raise NkiLimitError(COMPILE_FAILURES["output_buffer"])
            if result._home.scope is not None:
                raise NkiLimitError(COMPILE_FAILURES["loop_tensor"])
            if self.artifacts_dir:
                self._write_neff(fn, args, kwargs)
            return np.array(result.data) if self.compute else result.data

        run.__wrapped__ = fn
        return run

    def _write_neff(self, fn: Callable, args: tuple, kwargs: dict) -> None:
        names = list(inspect.signature(fn).parameters)
        neff = {"emulated_neff": EMULATED_NEFF_VERSION, "core": self.core.name, "kernel": fn.__name__,
                "inputs": [name for name, a in zip(names, args) if isinstance(a, np.ndarray)],
                "outputs": [NEFF_OUTPUT_NAME], "kwargs": kwargs,
                "program_instructions": self._counts["program_instructions"]}
        Path(self.artifacts_dir, NEFF_NAME).write_text(json.dumps(neff))

    def load_kernel(self) -> types.ModuleType:
        """A fresh copy of trn_burnin.kernel executed against these stand-in modules, after its
        source passed the static COMPILE_FAILURES checks."""
        spec = importlib.util.find_spec(KERNEL_MODULE)
        found = check_kernel_source(spec.loader.get_source(KERNEL_MODULE), spec.origin)
        if found:
            raise NkiLimitError("kernel source would not compile:\n" + "\n".join(found))
        module = importlib.util.module_from_spec(spec)
        self.artifacts_dir = os.environ.get(ARTIFACTS_ENV)
        fakes = self.modules()
        saved = {name: sys.modules.get(name) for name in fakes}
        sys.modules.update(fakes)
        try:
            spec.loader.exec_module(module)
        finally:
            for name, previous in saved.items():
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous
        return module
