"""Stage 1's decision over the nodes: who passed, who failed and why, what was replaced, how each
UltraServer fared, and whether that meets the policy."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .fleet import Instance
from .ledger import Ledger
from .reports import NodeOutcome
from .settings import Settings

NO_ULTRASERVER = "no UltraServer"


@dataclass(frozen=True)
class UltraServer:
    ultraserver_id: str
    nodes: tuple[str, ...]
    passed: tuple[str, ...]

    @property
    def whole(self) -> bool:
        return len(self.passed) == len(self.nodes)


@dataclass(frozen=True)
class NodesVerdict:
    healthy: bool
    summary: str
    passed: tuple[str, ...]
    failed: tuple[NodeOutcome, ...]
    replaced: tuple[dict[str, object], ...]
    ultraservers: tuple[UltraServer, ...] = field(default=())

    def failure_details(self) -> str:
        return " | ".join(outcome.describe() for outcome in self.failed) or "none"


def ultraservers(settings: Settings, instances: Iterable[Instance], passed: set[str]) -> tuple[UltraServer, ...]:
    if settings.instances_per_ultraserver <= 1:
        return ()
    groups: dict[str, list[str]] = {}
    for instance in instances:
        groups.setdefault(instance.ultraserver_id or NO_ULTRASERVER, []).append(instance.instance_id)
    return tuple(
        UltraServer(key, tuple(sorted(ids)), tuple(sorted(i for i in ids if i in passed)))
        for key, ids in sorted(groups.items())
    )


def _ultraserver_lines(settings: Settings, groups: tuple[UltraServer, ...]) -> str:
    expected = settings.expected_nodes // settings.instances_per_ultraserver
    lines, number = [], 0
    for group in groups:
        if group.ultraserver_id == NO_ULTRASERVER:
            lines.append(f"{len(group.nodes)} node(s) EC2 places in no UltraServer: {len(group.passed)} passed")
            continue
        number += 1
        state = "" if group.whole and len(group.nodes) == settings.instances_per_ultraserver else " (degraded)"
        lines.append(
            f"UltraServer {number} of {expected} ({group.ultraserver_id}): "
            f"{len(group.passed)}/{settings.instances_per_ultraserver} nodes passed{state}"
        )
    return "; ".join(lines)


def _replacement_lines(ledger: Ledger, running: set[str]) -> tuple[tuple[dict[str, object], ...], str]:
    records, texts = [], []
    for record in sorted(ledger.replacements.values(), key=lambda r: (r.requested_at, r.instance_id)):
        successor = ledger.successor_of(record.instance_id)
        ended_with = successor if successor in running else None
        records.append({"instance_id": record.instance_id, "reason": record.reason,
                        "replaced_at": record.requested_at, "replaced_by": ended_with})
        outcome = f"by {ended_with}" if ended_with else "no replacement came up"
        texts.append(f"{record.instance_id} ({record.reason}) {outcome}")
    return tuple(records), "; ".join(texts)


def decide(
    settings: Settings,
    instances: list[Instance],
    outcomes: Mapping[str, NodeOutcome],
    ledger: Ledger,
    not_replaced: Mapping[str, str],
) -> NodesVerdict:
    """``outcomes``: one per running instance (no report yet counts as a failure by now);
    ``not_replaced``: failed instances the handover did not replace, and why."""
    running = {i.instance_id for i in instances}
    passed = tuple(sorted(i for i, o in outcomes.items() if o.passed and i in running))
    failed = tuple(
        NodeOutcome(o.instance_id, False,
                    o.reasons + ((f"not replaced: {not_replaced[o.instance_id]}",) if o.instance_id in not_replaced else ()),
                    o.chip_fractions_of_peak, o.report_uri)
        for i, o in sorted(outcomes.items()) if not o.passed and i in running
    )  # fmt: skip
    groups = ultraservers(settings, instances, set(passed))
    if settings.whole_ultraservers and groups:
        counted = sum(len(g.passed) for g in groups if g.whole and len(g.nodes) == settings.instances_per_ultraserver)
        unit = "nodes in whole UltraServers"
    else:
        counted, unit = len(passed), "nodes"
    fractions = [f for i in passed for f in outcomes[i].chip_fractions_of_peak]
    median = f"{100 * statistics.median(fractions):.1f}%" if fractions else "n/a"
    # The rules each verdict was reached by, as the reports say: a node that reported before a
    # change of the thresholds keeps the verdict it was judged to.
    judged_by = sorted({o.thresholds for o in outcomes.values() if o.thresholds})
    floors = f"; {' | '.join(judged_by)}" if judged_by else ""
    summary = (
        f"{len(passed)}/{settings.expected_nodes} nodes passed the burn-in (policy "
        f"{settings.min_healthy_fraction:.0%} of {unit}{floors}); median chip throughput {median} of peak"
    )
    if len(running) < settings.expected_nodes:
        summary += f"; only {len(running)} of {settings.expected_nodes} instances were running"
    if groups:
        summary += "; " + _ultraserver_lines(settings, groups)
    replaced, replaced_text = _replacement_lines(ledger, running)
    if replaced_text:
        summary += f"; replaced: {replaced_text}"
    healthy = bool(passed) and counted / settings.expected_nodes >= settings.min_healthy_fraction
    return NodesVerdict(healthy, summary, passed, failed, replaced, groups)
