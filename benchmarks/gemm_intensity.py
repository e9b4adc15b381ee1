"""Arithmetic intensity and program size of the burn-in GEMM, counted on the NKI emulation (no Trainium needed).

For each NeuronCore generation in the catalog and each data type it supports, this runs the real
kernel source (trn_burnin/kernel.py) at the default shape on trn_burnin.emulation in counting-only
mode, and prints the HBM<->SBUF bytes and matmul instructions it issued, the program's instruction
count, the arithmetic intensity (FLOP per HBM byte) beside that data type's own roofline ridge
(catalog peak / the core's share of the chip's HBM bandwidth), and the fraction of matmuls that use
full tiles. A second table shows the program's instruction count against ``repeat`` (GEMMs per
launch): the repeats are one hardware loop (nl.fori_loop), so only the executed count grows.

Goal: every data type compute-bound with margin: BF16 intensity >= 2x its ridge, every other data
type >= 1x its own, 100% full tiles, and a program that does not grow with repeat. Exits 1 if any
misses. Usage, from the repository root:

    python benchmarks/gemm_intensity.py [--shape M K N] [--repeats 1 2 4 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from trn_burnin.catalog import BF16, CATALOG  # noqa: E402
from trn_burnin.emulation import Emulator  # noqa: E402
from trn_burnin.plan import DEFAULT_SHAPE, plan_gemm  # noqa: E402
from trn_burnin.workload import shape_only_inputs  # noqa: E402

RIDGE_MULTIPLE_GOAL = {BF16: 2.0}  # every other data type: 1.0
DEFAULT_REPEATS = (1, 2, 4, 8)


def count(core, dtype: str, shape: tuple[int, int, int], repeat: int = 1):
    plan = plan_gemm(core, dtype, *shape)
    emulator = Emulator(core, compute=False)
    kernel = emulator.load_kernel()
    getattr(kernel, plan.kernel_name)(*shape_only_inputs(plan).values(), **plan.kernel_kwargs(repeat))
    return plan, emulator.stats()


def intensity_table(generations, shape) -> list[str]:
    print(f"{'core':<5} {'dtype':<6} {'blocks MxNxK':<16} {'HBM->SBUF B':>13} {'SBUF->HBM B':>12} "
          f"{'matmuls':>8} {'program':>8} {'FLOP/B':>7} {'ridge':>6} {'x ridge':>7} {'goal':>5} {'full tiles':>10}")
    missed = []
    for core in generations:
        for dtype in core.supported_dtypes:
            plan, stats = count(core, dtype, shape)
            ridge = core.ridge_flop_per_byte(dtype)
            multiple = plan.flops / stats.hbm_bytes / ridge
            goal = RIDGE_MULTIPLE_GOAL.get(dtype, 1.0)
            print(f"{core.name:<5} {dtype:<6} {f'{plan.block_m}x{plan.block_n}x{plan.block_k}':<16} "
                  f"{stats.hbm_to_sbuf_bytes:>13,} {stats.sbuf_to_hbm_bytes:>12,} {stats.matmul_count:>8,} "
                  f"{stats.program_instructions:>8,} {plan.flops / stats.hbm_bytes:>7.0f} {ridge:>6.0f} "
                  f"{multiple:>7.2f} {f'{goal:g}x':>5} {stats.full_tile_fraction:>10.1%}")
            if multiple < goal or stats.full_tile_fraction != 1.0:
                missed.append(f"{core.name} {dtype}")
    return missed


def repeat_table(generations, shape, repeats) -> list[str]:
    print("\nprogram size against repeat (instructions: in the program / executed by the device)")
    print(f"{'core':<5} {'dtype':<6} " + " ".join(f"{f'repeat {r}':>20}" for r in repeats))
    missed = []
    for core in generations:
        for dtype in core.supported_dtypes:
            counted = [count(core, dtype, shape, r)[1] for r in repeats]
            cells = [f"{f'{s.program_instructions:,} / {s.executed_instructions:,}':>20}" for s in counted]
            print(f"{core.name:<5} {dtype:<6} " + " ".join(cells))
            if len({s.program_instructions for s in counted}) != 1:
                missed.append(f"{core.name} {dtype} program grows with repeat")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, metavar=("M", "K", "N"), default=list(DEFAULT_SHAPE))
    parser.add_argument("--repeats", type=int, nargs="+", default=list(DEFAULT_REPEATS))
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    generations = {spec.core.name: spec.core for spec in CATALOG.values()}.values()
    print(f"shape M x K x N = {' x '.join(map(str, shape))}; counted on the NKI emulation (trn_burnin.emulation)")
    missed = intensity_table(generations, shape) + repeat_table(generations, shape, args.repeats)
    goals = ", ".join(f"{dtype} >= {multiple:g}x" for dtype, multiple in RIDGE_MULTIPLE_GOAL.items())
    verdict = "met" if not missed else "MISSED: " + "; ".join(missed)
    print(f"\ngoal (intensity {goals} and every other data type >= 1x its own ridge, 100% full tiles, "
          f"program size independent of repeat): {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
