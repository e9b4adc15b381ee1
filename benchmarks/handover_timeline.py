"""Modelled time from a Capacity Block's start to the handover's verdict, step by step.

For each orchestrator x {staged before the block (pre-staged), deployed at the block's start} x
{default image, the kit's own image (TrnAmiStack)}, it prints every step with its modelled minutes
and what the figure rests on (the kit's own constants, imported from trn_constructs.timeline and
the settings' defaults; estimates are labelled so), the total, and the paid instance-minutes the
block spends before the handover at the configured instance count. Nothing here is measured: it is
the model the kit's deadlines are derived from, printed.

Goal: pre-staged with the kit's image, one trn2u UltraServer (4 x trn2.48xlarge) handed over within
15 minutes of the block's start. Printed as met or not per orchestrator, with the longest
burnInDurationSeconds that would meet it. Exits 1 if the goal is missed. Usage, from the
repository root:

    python benchmarks/handover_timeline.py [--duration-seconds N] [--instances N] [--steps]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from trn_constructs.config import parse_config  # noqa: E402
from trn_constructs.timeline import IMAGES, handover_timeline, minutes  # noqa: E402

ORCHESTRATORS = ("slurm", "eks")
GOAL_MINUTES = 15
GOAL_INSTANCES = 4  # one trn2u UltraServer: u-trn2x64 is 4 trn2.48xlarge


def configured() -> tuple[int, int, bool]:
    """cdk.json's burnInDurationSeconds, instanceCount and clusterTest."""
    root = Path(__file__).resolve().parents[1]
    config = parse_config(json.loads((root / "cdk.json").read_text())["context"])
    return config.burn_in.duration_seconds, config.capacity.instance_count, config.burn_in.cluster_test


def step_table(orchestrator: str, staged: bool, image: str, duration: int, cluster_test: bool) -> list[str]:
    steps = handover_timeline(orchestrator, staged, image, duration, cluster_test)
    width = max(len(step.name) for step in steps)
    rows, elapsed = [], 0.0
    for step in steps:
        elapsed += step.minutes
        rows.append(f"  {step.name.ljust(width)}  {step.minutes:5.1f}  {elapsed:5.1f}  {step.source}")
    return rows


def longest_duration_meeting_goal(orchestrator: str, cluster_test: bool) -> int:
    without = minutes(handover_timeline(orchestrator, True, "kit", 0, cluster_test))
    return max(0, int((GOAL_MINUTES - without) * 60))


def main(argv: list[str] | None = None) -> int:
    duration, instances, cluster_test = configured()
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration-seconds", type=int, default=duration, help="default: cdk.json's (%(default)s)")
    parser.add_argument("--instances", type=int, default=instances, help="default: cdk.json's (%(default)s)")
    parser.add_argument("--steps", action="store_true", help="every step of every variant, with its source")
    args = parser.parse_args(argv)

    print(f"Block start to verdict, every node healthy, burnInDurationSeconds={args.duration_seconds}, "
          f"cluster test {'on' if cluster_test else 'off'}; paid instance-minutes at {args.instances} instances")
    print(f"{'orchestrator':12}  {'deploy':10}  {'image':7}  {'minutes':>7}  {'paid instance-min':>17}")
    for orchestrator in ORCHESTRATORS:
        for staged in (True, False):
            for image in IMAGES:
                total = minutes(handover_timeline(orchestrator, staged, image, args.duration_seconds, cluster_test))
                deploy = "pre-staged" if staged else "at start"
                print(f"{orchestrator:12}  {deploy:10}  {image:7}  {total:7.1f}  {total * args.instances:17.0f}")
                if args.steps:
                    print("\n".join(step_table(orchestrator, staged, image, args.duration_seconds, cluster_test)))
    print()
    met_all = True
    for orchestrator in ORCHESTRATORS:
        total = minutes(handover_timeline(orchestrator, True, "kit", args.duration_seconds, cluster_test))
        met = total <= GOAL_MINUTES
        met_all &= met
        print(f"Goal {orchestrator}: pre-staged, kit image, {GOAL_INSTANCES} x trn2.48xlarge (one trn2u UltraServer) "
              f"within {GOAL_MINUTES} min of the block's start: {total:.1f} min, {'MET' if met else 'NOT MET'} "
              f"({total * GOAL_INSTANCES:.0f} paid instance-minutes); met with burnInDurationSeconds <= "
              f"{longest_duration_meeting_goal(orchestrator, cluster_test)}")
    return 0 if met_all else 1


if __name__ == "__main__":
    sys.exit(main())
