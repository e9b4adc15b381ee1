"""The GEMM plan: tile and block sizes derived from a NeuronCore generation's documented limits.

Nothing here is a free-standing literal about the hardware: tiles come from the catalog's
``NeuronCoreGeneration`` (pmax, stationary/moving free sizes, PSUM bank size, usable SBUF per
partition) and blocks are the largest the SBUF budget allows, chosen to maximise arithmetic
intensity (FLOP per HBM byte).
The same plan feeds the kernel (as compile-time arguments), the emulation tests and the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import product

from trn_burnin.catalog import BF16, FP8, FP32, MXFP8, NeuronCoreGeneration

# Kernel modes, one per way the Tensor Engine is driven.
MODE_BF16 = "bf16"
MODE_FP32 = "fp32"
MODE_FP8 = "fp8"
MODE_FP8_DOUBLE_ROW = "fp8_double_row"
MODE_MXFP8 = "mxfp8"

# Of the usable SBUF per partition (already less the compiler's reserve), leave a fifth to what the
# compiler adds around our tensors (spills, semaphores, its own staging).
SBUF_PLANNING_FRACTION = 0.8
# Operand blocks are double-buffered so the next block's DMA overlaps this block's matmuls.
OPERAND_BUFFERS = 2
# Each K block ends with a VectorE pass over PSUM; a PSUM bank takes the Vector Engine several
# matmuls' worth of time to evict, so a K block must hold at least this many matmuls per tile.
MIN_MATMULS_PER_EVICTION = 8
# Largest block, in tiles, the search considers along each dimension.
MAX_TILES_PER_BLOCK = 64
FP32_BYTES = 4
MX_PACK = 4  # contraction elements per float8_e4m3fn_x4 element
MX_SCALE_GROUP = 32  # elements one E8M0 scale covers (8 partitions x 4 packed values)

DEFAULT_SHAPE = (4096, 4096, 4096)  # (M, K, N)


@dataclass(frozen=True)
class OperandFormat:
    """How one dtype's operands travel: bytes in HBM and resident in SBUF, contraction packing."""

    mode: str
    hbm_bytes: float  # per element in HBM (MXFP8: the data byte plus its share of a scale)
    sbuf_bytes: float  # resident, per contraction element per column per partition
    rows_per_partition: int  # contraction elements one partition holds per column (x4 packing)
    chunks_per_matmul: int  # pmax-partition chunks one instruction contracts (double_row: 2)


def operand_format(core: NeuronCoreGeneration, dtype: str) -> OperandFormat:
    core.peak(dtype)  # rejects a dtype the generation does not support
    if dtype == BF16:
        return OperandFormat(MODE_BF16, 2, 2, 1, 1)
    if dtype == FP32:
        return OperandFormat(MODE_FP32, 4, 4, 1, 1)
    if dtype == FP8:
        if core.fp8_double_row:
            return OperandFormat(MODE_FP8_DOUBLE_ROW, 1, 1, 1, 2)
        return OperandFormat(MODE_FP8, 1, 1, 1, 1)
    # MXFP8, encoded once on the host: 1 byte of data per element and one scale byte per 32 in
    # HBM; in SBUF the x4 data and one scale byte per x4 element (nc_matmul_mx's scale layout).
    assert dtype == MXFP8
    return OperandFormat(MODE_MXFP8, 1 + 1 / MX_SCALE_GROUP, (MX_PACK + 1) / MX_PACK, MX_PACK, 1)


@dataclass(frozen=True)
class GemmPlan:
    """result[M, N] = lhsT[K, M].T @ rhs[K, N], blocked for one NeuronCore."""

    dtype: str
    mode: str
    core: str  # NeuronCore generation name
    m: int
    k: int
    n: int
    pmax: int
    tile_m: int  # stationary free size (output partitions)
    tile_n: int  # moving free size: one PSUM bank of FP32
    tile_k: int  # contraction per matmul instruction
    block_m: int
    block_n: int
    block_k: int
    hbm_bytes_per_element: float
    sbuf_bytes_per_partition: int  # planned peak, operands double-buffered

    @property
    def kernel_name(self) -> str:
        """The trn_burnin.kernel entry point for this plan's mode."""
        return "burnin_gemm_mx" if self.mode == MODE_MXFP8 else "burnin_gemm"

    @property
    def k_blocks(self) -> int:
        return math.ceil(self.k / self.block_k)

    def kernel_kwargs(self, repeat: int = 1) -> dict[str, object]:
        """Compile-time arguments of the kernel entry point (``repeat``: GEMMs per launch)."""
        return {
            **({} if self.mode == MODE_MXFP8 else {"mode": self.mode}),
            "tile_m": self.tile_m,
            "tile_n": self.tile_n,
            "tile_k": self.tile_k,
            "block_m": self.block_m,
            "block_n": self.block_n,
            "block_k": self.block_k,
            "repeat": repeat,
        }

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    @property
    def hbm_bytes(self) -> int:
        """Modelled HBM traffic of one GEMM: each operand block is loaded once per block pass."""
        m_blocks = math.ceil(self.m / self.block_m)
        n_blocks = math.ceil(self.n / self.block_n)
        loads = self.k * (self.m * n_blocks + self.n * m_blocks) * self.hbm_bytes_per_element
        return round(loads) + self.m * self.n * FP32_BYTES

    @property
    def intensity(self) -> float:
        return self.flops / self.hbm_bytes

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _sbuf_per_partition(fmt: OperandFormat, pmax: int, tiles: tuple[int, int], blocks: tuple[int, int, int],
                        k: int) -> int:
    """Planned SBUF per partition: operand blocks double-buffered, plus the FP32 output block
    when K spans several blocks (one output tile at a time when a single block spans K)."""
    tile_m, tile_n = tiles
    bm, bn, bk = blocks
    output = math.ceil(bm / tile_m) * bn if bk < k else tile_n
    operands = OPERAND_BUFFERS * (bk / pmax) * (bm + bn) * fmt.sbuf_bytes
    return math.ceil(output * FP32_BYTES + operands)


def _tiles_per_block(total_tiles: int) -> list[int]:
    """Powers of two up to the dimension, plus one block spanning the whole dimension."""
    limit = min(MAX_TILES_PER_BLOCK, total_tiles)
    counts = {1 << e for e in range(int(math.log2(limit)) + 1)}
    return sorted(counts | ({total_tiles} if total_tiles <= MAX_TILES_PER_BLOCK else set()))


def plan_gemm(core: NeuronCoreGeneration, dtype: str, m: int, k: int, n: int) -> GemmPlan:
    """The blocked GEMM for this core and shape; ValueError names any unsupported shape."""
    if min(m, k, n) <= 0:
        raise ValueError(f"GEMM dimensions must be positive, got M={m} K={k} N={n}")
    fmt = operand_format(core, dtype)
    tile_m = core.stationary_fmax
    tile_n = min(core.moving_fmax, core.psum_bank_bytes_per_partition // FP32_BYTES)
    tile_k = core.pmax * fmt.rows_per_partition * fmt.chunks_per_matmul
    if k % tile_k:
        raise ValueError(f"K={k} must be a multiple of {tile_k} for {dtype} on NeuronCore-{core.name}")
    if fmt.mode == MODE_MXFP8 and m % 2:
        raise ValueError(f"M={m} must be even for MXFP8 (nc_matmul_mx stationary free size)")

    budget = core.usable_sbuf_bytes_per_partition * SBUF_PLANNING_FRACTION
    k_tiles = k // tile_k
    min_k_tiles = min(k_tiles, MIN_MATMULS_PER_EVICTION)
    candidates = []
    for tm, tn, tk in product(
        _tiles_per_block(math.ceil(m / tile_m)),
        _tiles_per_block(math.ceil(n / tile_n)),
        _tiles_per_block(k_tiles),
    ):
        if tk < min_k_tiles and tk != k_tiles:
            continue
        bm, bn, bk = tm * tile_m, tn * tile_n, tk * tile_k
        sbuf = _sbuf_per_partition(fmt, core.pmax, (tile_m, tile_n), (bm, bn, bk), k)
        if sbuf > budget:
            continue
        plan = GemmPlan(
            dtype=dtype, mode=fmt.mode, core=core.name, m=m, k=k, n=n, pmax=core.pmax,
            tile_m=tile_m, tile_n=tile_n, tile_k=tile_k, block_m=bm, block_n=bn, block_k=bk,
            hbm_bytes_per_element=fmt.hbm_bytes, sbuf_bytes_per_partition=sbuf,
        )
        # Highest intensity first; then deeper K blocks (fewer PSUM evictions); then less SBUF.
        candidates.append(((-plan.intensity, -bk, sbuf), plan))
    if not candidates:
        raise ValueError(f"no block of {dtype} tiles fits NeuronCore-{core.name} SBUF")
    return min(candidates, key=lambda item: item[0])[1]
