"""Compile each kernel variant once per node, before any timing, and keep its NEFF.

NKI has no compile-only entry point in the pinned release (NKI 0.7: ``@nki.jit`` on numpy arrays
"compiles and executes"), so a variant is compiled by running it once, on one core, in a process
whose ``NKI_ARTIFACTS_DIR`` was set before nki was imported: that is where nki then keeps the NEFF,
as ``kernel.neff`` (nrtpy tutorial and troubleshooting pages). One directory per variant, since
the name is fixed. Workers load these NEFFs with nrtpy instead of compiling again.

Run as ``python -m trn_burnin.artifacts --job JSON --repeat R`` with NKI_ARTIFACTS_DIR set; prints
the CompiledVariant as JSON on its last stdout line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from trn_burnin.plan import GemmPlan
from trn_burnin.workload import make_operands

ARTIFACTS_ENV = "NKI_ARTIFACTS_DIR"
NEFF_NAME = "kernel.neff"


@dataclass(frozen=True)
class CompiledVariant:
    repeat: int
    seconds: float  # the compile run: compile plus one execution on one core
    neff: str | None  # None: nothing to load, the variant did not compile
    error: str | None = None
    note: str | None = None  # e.g. the execution after a successful compile failed

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def find_neff(directory: Path) -> Path | None:
    """nki's ``kernel.neff`` in ``directory``, else the one NEFF below it."""
    if (directory / NEFF_NAME).is_file():
        return directory / NEFF_NAME
    found = sorted(directory.rglob("*.neff"))
    return found[0] if len(found) == 1 else None


def compile_variant(plan: GemmPlan, repeat: int, seed: int, directory: Path, kernel_module: Any = None,
                    clock: Callable[[], float] = time.perf_counter) -> CompiledVariant:
    """Run the ``repeat`` variant once so that nki compiles it into ``directory``."""
    operands = make_operands(plan, seed)
    start = clock()
    try:
        module = kernel_module or importlib.import_module("trn_burnin.kernel")  # imports nki
        getattr(module, plan.kernel_name)(*operands.inputs.values(), **plan.kernel_kwargs(repeat))
        run_error = None
    except Exception as error:  # a compile error, or an execution error after a good compile
        run_error = f"{type(error).__name__}: {error}"
    seconds = clock() - start
    neff = find_neff(directory)
    if neff is None:
        return CompiledVariant(repeat, seconds, None, run_error or f"nki left no NEFF in {directory}")
    note = f"the compile run's execution failed ({run_error}); its core is burned in like the others" \
        if run_error else None
    return CompiledVariant(repeat, seconds, str(neff), note=note)


def main(argv: list[str] | None = None) -> int:
    from trn_burnin.worker import WorkerJob

    parser = argparse.ArgumentParser(prog="python -m trn_burnin.artifacts",
                                     description="Compile one kernel variant (started by `trn_burnin run`).")
    parser.add_argument("--job", required=True)
    parser.add_argument("--repeat", type=int, required=True)
    args = parser.parse_args(argv)
    directory = os.environ.get(ARTIFACTS_ENV)
    if not directory:  # nki reads it when it is imported: too late to set it here
        parser.error(f"{ARTIFACTS_ENV} must be set before this process starts")
    job = WorkerJob.from_json(args.job)
    print(json.dumps(compile_variant(job.plan, args.repeat, job.seed, Path(directory)).to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
