"""Node reports as trn_burnin writes them: produced by the real burn-in runner on the burn-in's
fake host (tests/burnin/fakes.py), so the handover reads exactly what a node would upload."""

from __future__ import annotations

import json

from tests.burnin.fakes import FakeHost, healthy_result
from trn_burnin.catalog import CATALOG
from trn_burnin.runner import RunOptions, run_burnin
from trn_burnin.verdict import Thresholds


def node_report(instance_id: str, *, slow_core: int | None = None, ultraserver_id: str | None = None,
                catalog_key: str = "trn2", generated_at: str = "2026-12-10T11:50:00Z") -> dict:
    """A node's report; ``slow_core`` runs at a third of its peers, so the node fails."""
    host = FakeHost()
    if slow_core is not None:
        host.overrides[slow_core] = healthy_result(slow_core, slow_core // 8, tflops=20.0)
    options = RunOptions(
        spec=CATALOG[catalog_key], instance_id=instance_id, ultraserver_id=ultraserver_id, dtype="bf16",
        shape=(4096, 4096, 4096), repeat=4, warmup_s=30, duration_s=180, sample_tiles=4, seed=1,
        thresholds=Thresholds.for_dtype("bf16"),
    )  # fmt: skip
    return run_burnin(options, host, now=lambda: generated_at)


def report_body(instance_id: str, **options) -> bytes:
    return json.dumps(node_report(instance_id, **options)).encode()
