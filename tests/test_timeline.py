"""The handover timeline model (constructs/timeline.py) matches what the code does, and the
benchmark prints it (benchmarks/handover_timeline.py; the figures themselves are the benchmark's)."""

from __future__ import annotations

import runpy
from datetime import timedelta
from pathlib import Path

import pytest

from trn_constructs.handover.handler import gate
from trn_constructs.timeline import (
    BACKUP_START_MINUTES,
    POLL_SECONDS,
    Budgets,
    handover_timeline,
    minutes,
    node_steps,
)

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "handover_timeline.py"


def test_the_backup_start_is_the_one_the_gate_schedules():
    assert gate.SCHEDULE_AFTER_START == timedelta(minutes=BACKUP_START_MINUTES)


@pytest.mark.parametrize("orchestrator", ["slurm", "eks"])
def test_a_staged_handover_is_its_start_the_nodes_and_the_verdict(orchestrator):
    steps = handover_timeline(orchestrator, staged=True, image="kit", duration_seconds=180)
    names = [step.name for step in steps]
    assert names[0] == "the handover starts on EC2's Capacity Block Delivered event"
    # What the handover does at the start: Slurm restarts clustermgtd, EKS scales the group.
    assert names[1] == {"slurm": "clustermgtd, restarted by the handover, finds the block active",
                        "eks": "the handover scales the node group's Auto Scaling group"}[orchestrator]
    assert steps[2:8] == node_steps(orchestrator, "kit", 180)
    assert steps[8].minutes == POLL_SECONDS / 2 / 60
    assert names[-2:] == ["cluster all-reduce", "verdict to the alert topic, SSM and S3"]
    # The handover's deadlines rest on the same node steps.
    assert Budgets(orchestrator, "kit", 180).node_minutes == minutes(steps[2:8])


def test_deploying_at_the_start_pays_for_building_the_cluster_first():
    for orchestrator in ("slurm", "eks"):
        staged = minutes(handover_timeline(orchestrator, True, "kit", 180))
        at_start = minutes(handover_timeline(orchestrator, False, "kit", 180))
        assert at_start - staged >= 20, orchestrator


def test_the_benchmark_prints_every_variant_and_the_goal(capsys):
    module = runpy.run_path(str(BENCHMARK))
    code = module["main"](["--duration-seconds", "60", "--instances", "4"])
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[2:10]]
    assert [(r[0], r[1], r[-3]) for r in rows] == [
        (o, d, i) for o in ("slurm", "eks") for d in ("pre-staged", "at") for i in ("default", "kit")]
    # Paid instance-minutes: the minutes times the instances.
    assert all(round(float(r[-2]) * 4) == int(r[-1]) for r in rows)
    goals = [line for line in out if line.startswith("Goal ")]
    assert len(goals) == 2 and all(" MET " in g for g in goals) and code == 0
