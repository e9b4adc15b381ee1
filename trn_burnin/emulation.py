"""EMULATION of the documented NKI semantics the burn-in kernel uses. Not Neuron's compiler or simulator.

It exists so that the real kernel source (trn_burnin/kernel.py) can run unchanged on a CPU:
``Emulator.load_kernel()`` executes that module with stand-in ``nki``, ``nki.language`` and
``nki.isa`` modules whose calls follow the NKI API reference on numpy arrays, and which enforce the
documented hardware limits of the catalog's NeuronCore generation:

* on-chip tensors have at most pmax partitions; live SBUF fits sbuf_bytes / pmax per partition;
  PSUM tensors are whole banks and at most psum_banks of them are live;
* nc_matmul: stationary and moving in SBUF with equal partition sizes <= pmax, stationary free size
  <= stationary_fmax, moving free size <= moving_fmax, dst an FP32 PSUM tile of the product's shape;
  perf_mode=double_row only where the generation has it, on FP8 tiles of shape [P, 2, F];
* nc_matmul_mx and quantize_mx only where the generation has them, with their layout rules.

A violation raises NkiLimitError. With ``compute=False`` no values are computed: tensors are
shape-only and the emulator just checks limits and counts DMA bytes and matmul instructions, which
is how the benchmark measures the default shape quickly. It models no timing, no engine overlap and
no compiler scheduling: passing here is necessary, not sufficient, for the kernel to run on a device.
"""

from __future__ import annotations

import enum
import importlib.util
import math
import sys
import types
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from trn_burnin.catalog import NeuronCoreGeneration
from trn_burnin.numerics import FLOAT8_E4M3, FLOAT8_E4M3FN, bf16_values, round_bf16

KERNEL_MODULE = "trn_burnin.kernel"


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
}
_FLOAT8 = ("float8_e4m3", "float8_e4m3fn")
_MATMUL_INPUTS = ("float32", "bfloat16") + _FLOAT8
# Reinterpretations the runner relies on: raw bit patterns -> the operand type they encode.
_BIT_DECODERS = {
    ("uint16", "bfloat16"): bf16_values,
    ("uint8", "float8_e4m3"): FLOAT8_E4M3.decode,
    ("uint8", "float8_e4m3fn"): FLOAT8_E4M3FN.decode,
}
_MX_GROUP_PARTITIONS = 8  # an MX scaling group: 8 partitions x 4 packed values
_QUADRANT = 32
_E8M0_BIAS = 127
_E4M3FN_MAX_EXPONENT = 8

SBUF, PSUM, HBM = "sbuf", "psum", "hbm"
_BUFFERS = {"sbuf": SBUF, "psum": PSUM, "hbm": HBM, "shared_hbm": HBM, "private_hbm": HBM}


class MatmulPerfMode(enum.Enum):
    none = "none"
    double_row = "double_row"


@dataclass(frozen=True)
class EmulationStats:
    """What one emulated run did."""

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


class Tensor:
    """An emulated NkiTensor: a numpy view plus NKI dtype and memory region."""

    def __init__(self, data: np.ndarray, dtype: str, buffer: str, shape_only: bool,
                 allocation: Any = None, started: np.ndarray | None = None):
        self.data, self.dtype, self.buffer, self.shape_only = data, dtype, buffer, shape_only
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

    def __getitem__(self, key: Any) -> "Tensor":
        key = list(key) if isinstance(key, tuple) else [key]
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
        return Tensor(self.data[index], self.dtype, self.buffer, self.shape_only, self._allocation, started)

    def view(self, dtype: Any) -> "Tensor":
        if dtype == self.dtype:
            return self
        decode = _BIT_DECODERS.get((self.dtype, dtype))
        if decode is None or self.buffer != HBM:
            raise NotImplementedError(f"emulation reinterprets only HBM bit patterns, not {self.dtype} as {dtype}")
        # HBM operands are read-only in the kernel, so a decoded copy behaves like a view.
        data = np.broadcast_to(np.float32(0), self.data.shape) if self.shape_only else decode(self.data)
        return Tensor(data, dtype, self.buffer, self.shape_only, self._allocation)

    def values(self) -> np.ndarray:
        return self.data


class Emulator:
    """Stand-in NKI modules for one NeuronCore generation, with counters."""

    def __init__(self, core: NeuronCoreGeneration, compute: bool = True):
        self.core, self.compute = core, compute
        self._live = {SBUF: 0, PSUM: 0}
        self._peak = {SBUF: 0, PSUM: 0}
        self._counts = dict.fromkeys(
            ("hbm_to_sbuf_bytes", "sbuf_to_hbm_bytes", "dma_count", "matmul_count",
             "full_tile_matmuls", "max_psum_dst_bytes_per_partition"), 0)

    # -- limits -----------------------------------------------------------------------------
    @property
    def bank_bytes(self) -> int:
        return self.core.psum_bank_bytes_per_partition

    @property
    def full_moving(self) -> int:
        return min(self.core.moving_fmax, self.bank_bytes // DTYPES["float32"].itemsize)

    def _reserve(self, allocation: _Allocation) -> None:
        amount = allocation.banks if allocation.buffer == PSUM else allocation.bytes
        limit = self.core.psum_banks if allocation.buffer == PSUM else self.core.sbuf_bytes // self.core.pmax
        if self._live[allocation.buffer] + amount > limit:
            unit = "banks" if allocation.buffer == PSUM else "bytes per partition"
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

    # -- nki.language -----------------------------------------------------------------------
    def ndarray(self, shape: tuple[int, ...], dtype: str, buffer: str = SBUF, name: str = "",
                address: Any = None) -> Tensor:
        del name, address
        buffer = _BUFFERS[buffer]
        if dtype not in DTYPES:
            raise NotImplementedError(f"emulation has no dtype {dtype}")
        tensor = Tensor(self._storage(tuple(shape), dtype), dtype, buffer, not self.compute)
        if not tensor.on_chip:
            return tensor
        if tensor.partitions > self.core.pmax:
            raise NkiLimitError(f"{buffer.upper()} tensor {tuple(shape)} has {tensor.partitions} "
                                f"partitions; pmax is {self.core.pmax}")
        per_partition = tensor.free_size * DTYPES[dtype].itemsize
        banks = math.ceil(per_partition / self.bank_bytes) if buffer == PSUM else 0
        tensor._allocation = _Allocation(self, buffer, per_partition, banks)
        if buffer == PSUM:
            tensor._started = np.zeros(tensor.data.shape, bool) if self.compute else None
        return tensor

    # -- nki.isa ----------------------------------------------------------------------------
    def dma_copy(self, dst: Tensor, src: Tensor, **options: Any) -> None:
        del options
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
        self._same_partitions("tensor_copy", dst, src)
        self._write(dst, src.values())

    def tensor_tensor(self, dst: Tensor, data1: Tensor, data2: Tensor, op: Callable, **options: Any) -> None:
        del options
        self._same_partitions("tensor_tensor", dst, data1, data2)
        if self.compute:
            self._write(dst, op(data1.values().astype(np.float32),
                                data2.values().astype(np.float32).reshape(data1.data.shape)))

    def memset(self, dst: Tensor, value: float, **options: Any) -> None:
        del options
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
        if is_transpose or tile_position or tile_size:
            raise NotImplementedError("emulation covers nc_matmul without transpose or PE tiling")
        for tile in (stationary, moving):
            if tile.dtype not in _MATMUL_INPUTS:
                raise NkiLimitError(f"nc_matmul does not take {tile.dtype} operands")
        if (stationary.dtype == "float32") != (moving.dtype == "float32"):
            raise NkiLimitError("nc_matmul: a float32 operand needs a float32 partner")
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
        """Per-partition factor 2^(e - 127) of each value's group, from the quadrant layout."""
        p = np.arange(partitions)
        rows = (p // _QUADRANT) * _QUADRANT + (p % _QUADRANT) // _MX_GROUP_PARTITIONS
        return np.exp2(scale[rows].astype(np.float64) - _E8M0_BIAS)

    def _check_mx(self, op: str, partitions: int) -> None:
        if not self.core.has_matmul_mx:
            raise NkiLimitError(f"{op} is not available on NeuronCore-{self.core.name}")
        if partitions % _QUADRANT or partitions > self.core.pmax:
            raise NkiLimitError(f"{op} partition size {partitions} must be a multiple of "
                                f"{_QUADRANT} and <= {self.core.pmax}")

    def nc_matmul_mx(self, dst: Tensor, stationary: Tensor, moving: Tensor, stationary_scale: Tensor,
                     moving_scale: Tensor, tile_position: Any = None, tile_size: Any = None,
                     accumulate: bool | None = None, name: str | None = None) -> None:
        del name
        if tile_position or tile_size:
            raise NotImplementedError("emulation covers nc_matmul_mx without PE tiling")
        self._check_mx("nc_matmul_mx", stationary.partitions)
        for data, scale in ((stationary, stationary_scale), (moving, moving_scale)):
            if data.dtype != "float8_e4m3fn_x4" or scale.dtype != "uint8" or scale.buffer != SBUF:
                raise NkiLimitError("nc_matmul_mx takes float8_e4m3fn_x4 data with uint8 SBUF scales")
            if scale.shape != data.shape:
                raise NkiLimitError(f"nc_matmul_mx scale shape {scale.shape} != data shape {data.shape}")
        if stationary.shape[-1] % 2:
            raise NkiLimitError("nc_matmul_mx stationary free size must be even")
        self._check_operands("nc_matmul_mx", dst, stationary, moving)
        if self.compute:
            p = stationary.partitions
            stat = stationary.values() * self._mx_scale_factors(stationary_scale.values(), p)[..., None]
            mov = moving.values() * self._mx_scale_factors(moving_scale.values(), p)[..., None]
            self._accumulate(dst, np.einsum("pmj,pnj->mn", stat, mov).astype(np.float32), accumulate)

    def quantize_mx(self, dst: Tensor, src: Tensor, dst_scale: Tensor, name: str | None = None) -> None:
        del name
        self._check_mx("quantize_mx", src.partitions)
        if src.dtype != "bfloat16" or dst.dtype != "float8_e4m3fn_x4" or dst_scale.dtype != "uint8":
            raise NkiLimitError("emulated quantize_mx takes bfloat16 src, float8_e4m3fn_x4 dst, uint8 scales")
        if SBUF != src.buffer or SBUF != dst.buffer or SBUF != dst_scale.buffer:
            raise NkiLimitError("quantize_mx works in SBUF")
        packed = src.free_size // 4
        if src.ndim != 2 or src.free_size % 4 or dst.shape != (src.partitions, packed) or dst_scale.shape != dst.shape:
            raise NkiLimitError(f"quantize_mx shapes: src {src.shape}, dst {dst.shape}, scale {dst_scale.shape}")
        if not self.compute:
            return
        p = src.partitions
        groups = src.values().reshape(p // _MX_GROUP_PARTITIONS, _MX_GROUP_PARTITIONS, packed, 4)
        amax = np.abs(groups).max(axis=(1, 3))
        # Block scale 2^(floor(log2 amax) - (Emax - 1)); an all-zero group gets the smallest scale.
        with np.errstate(divide="ignore"):
            exponent = np.where(amax > 0, np.floor(np.log2(amax)) - (_E4M3FN_MAX_EXPONENT - 1), -_E8M0_BIAS)
        factors = np.repeat(np.exp2(exponent), _MX_GROUP_PARTITIONS, axis=0)[:, :, None]
        self._write(dst, (src.values().reshape(p, packed, 4) / factors))
        scale = np.zeros((p, packed), np.uint8)
        group = np.arange(p // _MX_GROUP_PARTITIONS)
        rows = (group * _MX_GROUP_PARTITIONS // _QUADRANT) * _QUADRANT + group % (_QUADRANT // _MX_GROUP_PARTITIONS)
        scale[rows] = (exponent + _E8M0_BIAS).astype(np.uint8)
        dst_scale.data[...] = scale

    # -- module set -------------------------------------------------------------------------
    def modules(self) -> dict[str, types.ModuleType]:
        core = self.core
        language = types.ModuleType("nki.language", "EMULATION of nki.language (trn_burnin.emulation)")
        for dtype in DTYPES:
            setattr(language, dtype, dtype)
        for alias, buffer in _BUFFERS.items():
            setattr(language, alias, buffer)
        language.ndarray = self.ndarray
        language.add, language.subtract, language.multiply = np.add, np.subtract, np.multiply
        language.affine_range = language.sequential_range = language.static_range = range
        language.tile_size = types.SimpleNamespace(
            pmax=core.pmax, gemm_stationary_fmax=core.stationary_fmax, gemm_moving_fmax=core.moving_fmax,
            psum_bank_fmax=self.bank_bytes // DTYPES["float32"].itemsize, psum_num_banks=core.psum_banks,
            sbuf_size_bytes=core.sbuf_bytes)
        isa = types.ModuleType("nki.isa", "EMULATION of nki.isa (trn_burnin.emulation)")
        isa.matmul_perf_mode = MatmulPerfMode
        for op in ("dma_copy", "tensor_copy", "tensor_tensor", "memset", "nc_matmul", "nc_matmul_mx",
                   "quantize_mx"):
            setattr(isa, op, getattr(self, op))
        nki = types.ModuleType("nki", "EMULATION of nki (trn_burnin.emulation)")
        nki.language, nki.isa, nki.jit = language, isa, self.jit
        return {"nki": nki, "nki.language": language, "nki.isa": isa}

    def jit(self, fn: Callable | None = None, **options: Any) -> Callable:
        """@nki.jit: numpy arguments become HBM tensors; the returned HBM tensor becomes numpy."""
        del options
        if fn is None:
            return self.jit

        def run(*args: Any, **kwargs: Any) -> np.ndarray:
            wrapped = [Tensor(a, a.dtype.name, HBM, not self.compute) if isinstance(a, np.ndarray) else a
                       for a in args]
            result = fn(*wrapped, **kwargs)
            return np.array(result.data) if self.compute else result.data

        run.__wrapped__ = fn
        return run

    def load_kernel(self) -> types.ModuleType:
        """A fresh copy of trn_burnin.kernel executed against these stand-in modules."""
        spec = importlib.util.find_spec(KERNEL_MODULE)
        module = importlib.util.module_from_spec(spec)
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
