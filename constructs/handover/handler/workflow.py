"""One step of the handover, as the state machine calls it every poll: begin, wait for the nodes
(replacing failed ones while time allows), run the cluster test, publish the verdict.

Nothing lives only in the execution: instances come from EC2, verdicts from the nodes' reports,
replacements from the ledger. A new execution (a redeploy, a retry, the block's start) therefore
picks up exactly where another stopped, and never replaces an instance twice.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from . import collective, publish
from . import aws
from .aws import iso, parse_time
from .fleet import block_instances
from .judge import NodesVerdict, decide
from .ledger import Ledger
from .nodes import NodeOperations, node_operations
from .reports import NodeOutcome, list_reports, newest_by_instance, read_outcome
from .settings import Settings

# Before the block has started, look again at most this often (the Delivered event or the
# schedule normally starts the handover at the start itself).
MAX_WAIT_FOR_BLOCK_SECONDS = 3600
BLOCK_NOT_YET = ("scheduled", "payment-pending", "pending", "assessing", "delayed")
# EC2 terminates a block's instances from 30 minutes before its end; EKS scales its node group
# to 0 at 40. A handover that could not finish before then hands over nothing.
BLOCK_END_MARGIN = timedelta(minutes=40)
# A block's instances normally launch within a minute or two of the handover's request; while none
# has, the request is made again this often (it is idempotent), at most CAPACITY_REQUESTS times.
CAPACITY_RETRY = timedelta(minutes=3)
CAPACITY_REQUESTS = 3


def run_id_of(execution_arn: str) -> str:
    """The execution's name: it names the cluster test's folder (and Job) of this handover."""
    return execution_arn.rsplit(":", 1)[-1][-40:]


def advance(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or Settings.load()
    state = dict(event.get("state") or {})
    if "failure" in event:
        failure = event["failure"]
        state.pop("failure", None)
        return _finish(settings, state, "not-ready", f"the handover stopped on an error it could not get past "
                       f"({failure.get('Error')}: {str(failure.get('Cause'))[:500]}); the cluster and its nodes stay. "
                       f"Logs: the handover's advance function")
    ops = node_operations(settings)
    phase = state.get("phase", "begin")
    if phase == "begin":
        return _begin(settings, ops, state, event.get("execution", ""))
    if phase == "nodes":
        return _nodes(settings, ops, state)
    return _cluster_test(settings, ops, state)


def _wait(state: dict[str, Any], seconds: int) -> dict[str, Any]:
    return {**state, "done": False, "wait_seconds": max(0, int(seconds))}


def _begin(settings: Settings, ops: NodeOperations, state: dict[str, Any], execution: str) -> dict[str, Any]:
    trigger = state.get("trigger", "manual")
    state.update(trigger=trigger, execution=execution, run_id=run_id_of(execution))
    if trigger != "deploy":
        others = _other_running_executions(execution)
        if others:
            return _finish(settings, state, "joined", f"the handover {others[0]} is already running; this "
                           f"{trigger} run stands down", publish_it=False)
    block = aws.client("ec2").describe_capacity_reservations(
        CapacityReservationIds=[settings.reservation_id])["CapacityReservations"][0]
    moment = aws.now()
    start, end = block.get("StartDate"), block.get("EndDate")
    if block["State"] in BLOCK_NOT_YET and start and start > moment:
        publish.set_state(settings, "staged", summary=f"the Capacity Block starts at {iso(start)}; the "
                          "handover runs then", block_start=iso(start))
        return _wait(state, min((start - moment).total_seconds(), MAX_WAIT_FOR_BLOCK_SECONDS))
    if block["State"] != "active":
        return _finish(settings, state, "not-ready", f"Capacity Block {settings.reservation_id} is "
                       f"{block['State']}, not active: its instances cannot run")
    budget = timedelta(seconds=settings.budget_seconds)
    if end and moment + budget > end - BLOCK_END_MARGIN:
        return _finish(settings, state, "not-ready", (
            f"Capacity Block {settings.reservation_id} ends at {iso(end)}: a {budget.seconds // 60}-minute "
            "handover started now would not finish before its instances are stopped"))  # fmt: skip
    state.update(started_at=iso(moment), phase="nodes")
    ops.ensure_capacity()
    publish.set_state(settings, "burning-in", summary=f"handover started ({trigger}); waiting for "
                      f"{settings.expected_nodes} burn-in reports", run_id=state["run_id"])
    return _wait(state, 0)


def _other_running_executions(execution: str) -> list[str]:
    if not execution:
        return []
    machine = execution.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0]
    pages = aws.client("stepfunctions").get_paginator("list_executions").paginate(
        stateMachineArn=machine, statusFilter="RUNNING")
    return [e["name"] for page in pages for e in page["executions"] if e["executionArn"] != execution]


def _why_not_replace(settings: Settings, ledger: Ledger, instance_id: str, moment: datetime,
                     deadline: datetime) -> str | None:
    if not settings.replace_failed_nodes:
        return "burnInReplaceFailedNodes is false"
    done = ledger.generation(instance_id)
    if done >= settings.max_replacements:
        return f"its slot was replaced {done} time(s) already (burnInMaxReplacements={settings.max_replacements})"
    needed = timedelta(seconds=settings.replacement_seconds)
    if moment + needed > deadline:
        left = max(0, int((deadline - moment).total_seconds() // 60))
        return (f"a replacement needs about {int(needed.total_seconds() // 60)} minutes and only {left} "
                "remain before the nodes' deadline")
    return None


def _nodes(settings: Settings, ops: NodeOperations, state: dict[str, Any]) -> dict[str, Any]:
    s3, moment = aws.client("s3"), aws.now()
    deadline = parse_time(state["started_at"]) + timedelta(seconds=settings.nodes_budget_seconds)
    instances = block_instances(aws.client("ec2"), settings.reservation_id)
    asked = state.get("capacity_requests", 1)
    if not instances and asked < CAPACITY_REQUESTS and moment >= parse_time(state["started_at"]) + CAPACITY_RETRY * asked:
        print(f"no instance of the block {int(CAPACITY_RETRY.total_seconds() // 60) * asked} minutes after the start: "
              "asking for them again")
        ops.ensure_capacity()
        state = {**state, "capacity_requests": asked + 1}
    ledger = Ledger.load(s3, settings.bucket, settings.handover_prefix)
    ledger.assign_successors(instances)
    running = {i.instance_id for i in instances}
    newest = newest_by_instance(list_reports(s3, settings.bucket, settings.reports_prefix), running)
    outcomes = {i: read_outcome(s3, settings.bucket, item) for i, item in newest.items()}
    hung_after = timedelta(seconds=settings.report_timeout_seconds)
    for instance in instances:
        if instance.instance_id not in outcomes and moment > instance.launched + hung_after:
            minutes = int((moment - instance.launched).total_seconds() // 60)
            outcomes[instance.instance_id] = NodeOutcome(
                instance.instance_id, False, (f"no report {minutes} minutes after it launched",))
    not_replaced: dict[str, str] = {}
    for instance in instances:
        outcome = outcomes.get(instance.instance_id)
        if outcome is None or outcome.passed:
            continue
        if instance.instance_id not in ledger.replacements:
            why = _why_not_replace(settings, ledger, instance.instance_id, moment, deadline)
            if why:
                not_replaced[instance.instance_id] = why
                continue
            ledger.claim(instance.instance_id, outcome.reasons[0], moment)
            print(f"replacing {instance.instance_id}: {outcome.reasons[0]}")
        # Also for a claim found in the ledger: its termination may never have been sent.
        ops.replace(instance.instance_id)
    judged = [i for i in instances if i.instance_id not in ledger.replacements]
    missing = [i.instance_id for i in judged if i.instance_id not in outcomes]
    short = settings.expected_nodes - len(judged)
    if (missing or short > 0) and moment < deadline:
        progress = (f"burning in: {len(judged) - len(missing)} of {settings.expected_nodes} nodes reported"
                    + (f", {short} slot(s) waiting for an instance" if short > 0 else ""))
        if progress != state.get("progress"):
            publish.set_state(settings, "burning-in", summary=progress, run_id=state["run_id"])
        print(f"{progress}; waiting until {iso(deadline)}")
        return _wait({**state, "progress": progress}, settings.poll_seconds)
    for instance_id in missing:
        outcomes[instance_id] = NodeOutcome(instance_id, False, ("no report before the deadline",))
    verdict = decide(settings, judged, {i.instance_id: outcomes[i.instance_id] for i in judged}, ledger, not_replaced)
    state["nodes"] = _nodes_document(verdict)
    if not verdict.healthy:
        return _finish(settings, state, "not-ready", f"{verdict.summary}. Failed nodes: {verdict.failure_details()}")
    if settings.cluster_test is None:
        return _finish(settings, state, "ready", f"{verdict.summary}. Cluster all-reduce not run: "
                       f"{settings.cluster_test_skipped or 'not configured'}")
    if len(verdict.passed) < 2:
        return _finish(settings, state, "ready", f"{verdict.summary}. Cluster all-reduce not run: it needs 2+ nodes")
    publish.set_state(settings, "cluster-test", summary=f"{verdict.summary}; cluster all-reduce running",
                      run_id=state["run_id"])
    return _wait({**state, "phase": "cluster-test"}, 0)


def _nodes_document(verdict: NodesVerdict) -> dict[str, Any]:
    return {
        "summary": verdict.summary,
        "passed": list(verdict.passed),
        "failed": [{"instance_id": o.instance_id, "reasons": list(o.reasons), "report": o.report_uri}
                   for o in verdict.failed],
        "replaced": list(verdict.replaced),
        "ultraservers": [asdict(u) for u in verdict.ultraservers],
        "failure_details": verdict.failure_details(),
    }


def _cluster_test(settings: Settings, ops: NodeOperations, state: dict[str, Any]) -> dict[str, Any]:
    nodes = state["nodes"]
    run = collective.ClusterRun(
        bucket=settings.bucket, prefix=f"{settings.cluster_test_prefix}{state['run_id']}/",
        run_id=state["run_id"], nodes=len(nodes["passed"]),
        deadline=parse_time(state["started_at"]) + timedelta(seconds=settings.budget_seconds),
    )  # fmt: skip
    result = collective.advance(aws.client("s3"), ops, run)
    if result is None:
        return _wait(state, settings.poll_seconds)
    return _finish(settings, state, "ready" if result.passed else "not-ready", f"{nodes['summary']}. {result.summary}")


def _finish(settings: Settings, state: dict[str, Any], verdict_state: str, summary: str,
            publish_it: bool = True) -> dict[str, Any]:
    nodes = state.get("nodes") or {}
    verdict = {
        "state": verdict_state,
        "summary": summary,
        "stack": settings.stack_name,
        "trigger": state.get("trigger"),
        "run_id": state.get("run_id"),
        "execution": state.get("execution"),
        "started_at": state.get("started_at"),
        "finished_at": iso(aws.now()),
        "expected_nodes": settings.expected_nodes,
        "passed_nodes": len(nodes.get("passed", [])),
        "passed": nodes.get("passed", []),
        "failed": nodes.get("failed", []),
        "replaced": nodes.get("replaced", []),
        "ultraservers": nodes.get("ultraservers", []),
        "reports": settings.reports_location,
    }
    if publish_it:
        verdict["verdict_uri"] = publish.publish_verdict(settings, state.get("run_id") or "unknown", verdict)
    print(summary)
    return {**state, "done": True, "wait_seconds": 0, "verdict": verdict}
