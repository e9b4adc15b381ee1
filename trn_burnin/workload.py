"""The burn-in's operands and its float32 reference, shared by the node worker and the CPU tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trn_burnin.numerics import FLOAT8_E4M3, bf16_bits, bf16_values, mx_interleave
from trn_burnin.plan import MODE_BF16, MODE_FP32, MODE_MXFP8, GemmPlan

# Reference tiles: the output is checked against float32 numpy on a sample of (tile_m x tile_m)
# tiles, so the host check stays cheap however large the GEMM is.
DEFAULT_SAMPLE_TILES = 8


@dataclass(frozen=True)
class Operands:
    lhsT_bits: np.ndarray  # what the kernel reads: [K, M] (MXFP8: [K/4, 4M])
    rhs_bits: np.ndarray
    lhsT: np.ndarray  # float32 values those bits encode, [K, M]
    rhs: np.ndarray  # [K, N]


def encode(values: np.ndarray, plan: GemmPlan) -> tuple[np.ndarray, np.ndarray]:
    """(kernel bits, float32 values they stand for) of a float32 [K, C] operand."""
    if plan.mode == MODE_FP32:
        return values, values
    if plan.mode in (MODE_BF16, MODE_MXFP8):
        bits = bf16_bits(values)
        exact = bf16_values(bits)
        return (mx_interleave(bits, plan.pmax) if plan.mode == MODE_MXFP8 else bits), exact
    bits = FLOAT8_E4M3.encode(values)
    return bits, FLOAT8_E4M3.decode(bits)


def make_operands(plan: GemmPlan, seed: int) -> Operands:
    rng = np.random.default_rng(seed)
    lhsT_bits, lhsT = encode(rng.uniform(-1.0, 1.0, (plan.k, plan.m)).astype(np.float32), plan)
    rhs_bits, rhs = encode(rng.uniform(-1.0, 1.0, (plan.k, plan.n)).astype(np.float32), plan)
    return Operands(lhsT_bits, rhs_bits, lhsT, rhs)


@dataclass(frozen=True)
class ReferenceTile:
    rows: slice
    cols: slice
    expected: np.ndarray  # float32


def reference_tiles(operands: Operands, plan: GemmPlan, count: int, seed: int) -> tuple[ReferenceTile, ...]:
    """``count`` output tiles (the first and last always included) with their float32 reference."""
    size = plan.tile_m
    row_starts = range(0, plan.m, size)
    col_starts = range(0, plan.n, size)
    corners = [(0, 0), (row_starts[-1], col_starts[-1])]
    rng = np.random.default_rng(seed)
    extra = [(int(rng.choice(row_starts)), int(rng.choice(col_starts))) for _ in range(max(0, count - 2))]
    tiles = []
    for r0, c0 in dict.fromkeys(corners + extra):
        rows, cols = slice(r0, min(r0 + size, plan.m)), slice(c0, min(c0 + size, plan.n))
        expected = operands.lhsT[:, rows].T @ operands.rhs[:, cols]
        tiles.append(ReferenceTile(rows, cols, expected.astype(np.float32)))
    return tuple(tiles[:max(count, 1)])


def tile_errors(result: np.ndarray, tiles: tuple[ReferenceTile, ...]) -> tuple[float, float]:
    """(max abs error, max abs error / max |reference|) over the sampled tiles."""
    worst_abs, scale = 0.0, 0.0
    for tile in tiles:
        diff = np.abs(result[tile.rows, tile.cols].astype(np.float64) - tile.expected)
        worst_abs = max(worst_abs, float(np.nan_to_num(diff, nan=np.inf).max()))
        scale = max(scale, float(np.abs(tile.expected).max()))
    return worst_abs, (worst_abs / scale if scale else worst_abs)
