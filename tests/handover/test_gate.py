"""The deploy's side: staged before the block starts, one execution followed to its verdict after,
no new judging in a rollback, nothing left running after a delete."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.support.cloud import BLOCK_START, FAIL, PASS, Cloud
from tests.support.handover import STATE_MACHINE, STATE_PARAMETER, run, settings, use
from trn_constructs.handover.handler import gate

STACK_ID = "arn:aws:cloudformation:us-east-2:123456789012:stack/TrnClusterStack/0a1b2c3d"


def event(request: str = "Create", request_id: str = "req-1", **extra) -> dict:
    return {"RequestType": request, "RequestId": request_id, "StackId": STACK_ID,
            "LogicalResourceId": "HandoverGate", "ResourceProperties": {}, **extra}


@pytest.fixture(autouse=True)
def machine(monkeypatch):
    monkeypatch.setenv(gate.STATE_MACHINE_ENV, STATE_MACHINE)


def test_before_the_block_starts_the_cluster_is_staged_and_the_start_armed(monkeypatch):
    cloud = use(monkeypatch, Cloud(now=BLOCK_START - timedelta(hours=5)))
    response = gate.on_event(event(), settings())
    data = response["Data"]
    assert data["Mode"] == "staged"
    assert data["Summary"].startswith(
        "STAGED: everything but the Trainium instances is deployed; Capacity Block cr-0123456789abcdef0 "
        "starts at 2026-12-10T11:30:00Z and the handover (burn-in, replacement of failed nodes, cluster test) "
        "starts by itself then."
    )
    assert data["StartSchedule"] == "at(2026-12-10T11:32:00)" and data["StartScheduleState"] == "ENABLED"
    assert cloud.executions == {}
    assert json.loads(cloud.parameters[STATE_PARAMETER])["state"] == "staged"
    assert gate.is_complete({**event(), **response}, settings()) == {"IsComplete": True}


def test_after_the_start_the_deploy_waits_for_the_verdict(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    response = gate.on_event(event(), settings())
    arn = response["Data"]["Execution"]
    assert response["Data"]["Mode"] == "wait" and response["Data"]["StartScheduleState"] == "DISABLED"
    assert json.loads(cloud.executions[arn]["input"]) == {"trigger": "deploy"}
    polled = {**event(), **response}
    assert gate.is_complete(polled, settings()) == {"IsComplete": False}
    run(cloud, settings(), name=arn.rsplit(":", 1)[-1])
    done = gate.is_complete(polled, settings())
    assert done["IsComplete"] is True
    assert done["Data"]["Summary"].startswith("4/4 nodes passed the burn-in")


def test_a_retried_request_starts_no_second_handover(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    first = gate.on_event(event(request_id="same"), settings())
    second = gate.on_event(event(request_id="same"), settings())
    assert first["Data"]["Execution"] == second["Data"]["Execution"]
    assert len(cloud.calls("stepfunctions", "StartExecution")) == 2
    assert [e["status"] for e in cloud.executions.values()] == ["RUNNING"]


def test_a_new_deploy_supersedes_a_running_handover(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    old = gate.on_event(event(request_id="old"), settings())["Data"]["Execution"]
    new = gate.on_event(event("Update", request_id="new", PhysicalResourceId="handover-TrnClusterStack"), settings())
    assert cloud.executions[old]["status"] == "ABORTED"
    assert cloud.executions[new["Data"]["Execution"]]["status"] == "RUNNING"


def test_a_cluster_that_is_not_ready_fails_the_deploy_naming_the_nodes(monkeypatch):
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, FAIL]))
    response = gate.on_event(event(), settings())
    run(cloud, settings(replace_failed_nodes=False), name=response["Data"]["Execution"].rsplit(":", 1)[-1])
    with pytest.raises(gate.HandoverFailed) as failed:
        gate.is_complete({**event(), **response}, settings())
    message = str(failed.value)
    bad = sorted(cloud.nodes)[1]
    assert message.startswith("Cluster NOT ready: 3/4 nodes passed the burn-in")
    assert f"Failed nodes: {bad}: core 5 (device 0) reached 20.0 TFLOPS bf16" in message
    assert "not replaced: burnInReplaceFailedNodes is false" in message
    assert "The cluster stays, failed nodes quarantined." in message


def test_an_execution_that_fails_says_so_and_that_nothing_was_rolled_back(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    response = gate.on_event(event(), settings())
    cloud.executions[response["Data"]["Execution"]].update(status="FAILED", error="States.Timeout", cause="")
    with pytest.raises(gate.HandoverFailed) as failed:
        gate.is_complete({**event(), **response}, settings())
    assert str(failed.value) == (
        f"Handover {gate.execution_name('req-1')} ended FAILED: States.Timeout. Nothing was rolled back: the "
        "cluster and its nodes stay; deploy again to hand over. Logs: /trn-kit/TrnClusterStack/handover"
    )


def test_a_rollback_keeps_the_last_verdict_and_judges_nothing(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    cloud.parameters[STATE_PARAMETER] = json.dumps({"state": "ready", "summary": "4/4 nodes passed the burn-in"})
    cloud.stack_status = "UPDATE_ROLLBACK_IN_PROGRESS"
    response = gate.on_event(event("Update", PhysicalResourceId="handover-TrnClusterStack"), settings())
    assert response["Data"]["Mode"] == "rollback"
    assert response["Data"]["Summary"] == (
        "Rolled back without a new handover; the last verdict stands: 4/4 nodes passed the burn-in")
    assert cloud.executions == {}
    assert gate.is_complete({**event("Update"), **response}, settings()) == {"IsComplete": True}


def test_delete_stops_what_still_runs(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    arn = gate.on_event(event(), settings())["Data"]["Execution"]
    gate.on_event(event("Delete", PhysicalResourceId="handover-TrnClusterStack"), settings())
    assert cloud.executions[arn]["status"] == "ABORTED"
    assert cloud.calls("ec2", "TerminateInstances") == []
