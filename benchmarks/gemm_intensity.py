"""Arithmetic intensity of the burn-in GEMM, counted on the NKI emulation (no Trainium needed).

For each NeuronCore generation in the catalog and each dtype it supports, this runs the real kernel
source (trn_burnin/kernel.py) at the default shape on trn_burnin.emulation in counting-only mode,
and prints the HBM<->SBUF bytes and matmul instructions it issued, the arithmetic intensity (FLOP per
HBM byte) beside the roofline ridge, and the fraction of matmuls that use full tiles.

Goal (issue 6): for the default shape and dtype (BF16), intensity >= 2x the ridge and full tiles
throughout. Exits 1 if a generation misses it. Usage, from the repository root:

    python benchmarks/gemm_intensity.py [--shape M K N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from trn_burnin.catalog import BF16, CATALOG  # noqa: E402
from trn_burnin.emulation import Emulator  # noqa: E402
from trn_burnin.plan import DEFAULT_SHAPE, plan_gemm  # noqa: E402
from trn_burnin.workload import encode  # noqa: E402

GOAL_RIDGE_MULTIPLE = 2.0


def count(core, dtype: str, shape: tuple[int, int, int]):
    plan = plan_gemm(core, dtype, *shape)
    emulator = Emulator(core, compute=False)
    kernel = emulator.load_kernel()
    # Shape-only operands: the right dtype and layout, no memory behind them.
    lhsT_bits, _ = encode(np.zeros((plan.k, 1), np.float32), plan)
    rhs_bits, _ = encode(np.zeros((plan.k, 1), np.float32), plan)
    rows = lhsT_bits.shape[0]
    lhsT = np.broadcast_to(lhsT_bits[:1, :1], (rows, lhsT_bits.shape[1] * plan.m))
    rhs = np.broadcast_to(rhs_bits[:1, :1], (rows, rhs_bits.shape[1] * plan.n))
    kernel.burnin_gemm(lhsT, rhs, **plan.kernel_kwargs())
    return plan, emulator.stats()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, metavar=("M", "K", "N"), default=list(DEFAULT_SHAPE))
    shape = tuple(parser.parse_args(argv).shape)
    generations = {spec.core.name: spec.core for spec in CATALOG.values()}
    print(f"shape M x K x N = {' x '.join(map(str, shape))}; counted on the NKI emulation (trn_burnin.emulation)")
    header = (f"{'core':<5} {'dtype':<6} {'blocks MxNxK':<16} {'HBM->SBUF B':>13} {'SBUF->HBM B':>12} "
              f"{'matmuls':>8} {'FLOP/B':>7} {'ridge':>6} {'x ridge':>7} {'full tiles':>10}")
    print(header)
    missed = []
    for core in generations.values():
        for dtype in core.supported_dtypes:
            plan, stats = count(core, dtype, shape)
            ridge = core.ridge_flop_per_byte(dtype)
            intensity = plan.flops / stats.hbm_bytes
            print(f"{core.name:<5} {dtype:<6} {f'{plan.block_m}x{plan.block_n}x{plan.block_k}':<16} "
                  f"{stats.hbm_to_sbuf_bytes:>13,} {stats.sbuf_to_hbm_bytes:>12,} {stats.matmul_count:>8,} "
                  f"{intensity:>7.0f} {ridge:>6.0f} {intensity / ridge:>7.2f} {stats.full_tile_fraction:>10.1%}")
            goal_met = intensity >= GOAL_RIDGE_MULTIPLE * ridge and stats.full_tile_fraction == 1.0
            if dtype == BF16 and not goal_met:
                missed.append(core.name)
    verdict = "met" if not missed else f"MISSED on NeuronCore-{', '.join(missed)}"
    print(f"goal (BF16: intensity >= {GOAL_RIDGE_MULTIPLE:g}x ridge, 100% full tiles): {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
