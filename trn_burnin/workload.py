"""The burn-in's operands and its float32 reference, shared by the node worker and the CPU tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trn_burnin.numerics import FLOAT8_E4M3, bf16_bits, bf16_values, mx_encode
from trn_burnin.plan import MODE_BF16, MODE_FP32, MODE_MXFP8, GemmPlan

# Reference tiles: the output is checked against float32 numpy on a sample of (tile_m x tile_m)
# tiles, so the host check stays cheap however large the GEMM is.
DEFAULT_SAMPLE_TILES = 8


@dataclass(frozen=True)
class Operands:
    """What the kernel reads, by its parameter names (also the NEFF's input names), and the float32
    values those bits stand for."""

    inputs: dict[str, np.ndarray]  # by input_names(plan)
    lhsT: np.ndarray  # float32 values, [K, M]
    rhs: np.ndarray  # [K, N]


def input_names(plan: GemmPlan) -> tuple[str, ...]:
    """The kernel entry point's operand parameters in order: burnin_gemm_mx's for MXFP8,
    burnin_gemm's otherwise. A NEFF compiled from the kernel names its inputs the same."""
    if plan.mode == MODE_MXFP8:
        return ("lhsT_data", "rhs_data", "lhsT_scales", "rhs_scales")
    return ("lhsT_bits", "rhs_bits")


def _encode(values: np.ndarray, plan: GemmPlan) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(kernel inputs by name suffix, float32 values they stand for) of a float32 [K, C] operand."""
    if plan.mode == MODE_FP32:
        return {"bits": values}, values
    if plan.mode == MODE_BF16:
        bits = bf16_bits(values)
        return {"bits": bits}, bf16_values(bits)
    if plan.mode == MODE_MXFP8:
        mx = mx_encode(values, plan.pmax)
        return {"data": mx.data, "scales": mx.scales}, mx.values
    bits = FLOAT8_E4M3.encode(values)
    return {"bits": bits}, FLOAT8_E4M3.decode(bits)


def _inputs(plan: GemmPlan, lhsT: dict[str, np.ndarray], rhs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sides = {"lhsT": lhsT, "rhs": rhs}
    return {name: sides[name.split("_")[0]][name.split("_")[1]] for name in input_names(plan)}


def make_operands(plan: GemmPlan, seed: int) -> Operands:
    """Seeded uniform(-1, 1) operands, encoded once for the kernel."""
    rng = np.random.default_rng(seed)
    lhsT_in, lhsT = _encode(rng.uniform(-1.0, 1.0, (plan.k, plan.m)).astype(np.float32), plan)
    rhs_in, rhs = _encode(rng.uniform(-1.0, 1.0, (plan.k, plan.n)).astype(np.float32), plan)
    return Operands(_inputs(plan, lhsT_in, rhs_in), lhsT, rhs)


def shape_only_inputs(plan: GemmPlan) -> dict[str, np.ndarray]:
    """The kernel's inputs with the right names, dtypes and shapes but no memory behind them, for
    counting runs of the emulation at full size."""
    encoded, _ = _encode(np.zeros((plan.k, 1), np.float32), plan)

    def widened(width: int) -> dict[str, np.ndarray]:
        return {name: np.broadcast_to(a[:1, :1], (a.shape[0], width)) for name, a in encoded.items()}

    return _inputs(plan, widened(plan.m), widened(plan.n))


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
