"""The deploy's side of the handover (CDK Provider framework, ``Custom::TrnHandover``).

on_event: before the block starts, the cluster is staged and the handover is left to the block's
start (EC2's Capacity Block Delivered event, or the schedule this resource's attributes arm);
after it, starts one execution of the handover state machine (superseding any other) and
is_complete follows it to its verdict: ready completes the deploy, anything else fails it with the
failed nodes named. A rollback never judges again (it would only repeat an old verdict, or fail
the rollback): it keeps the last verdict and completes at once. Delete stops what still runs, so a
rolled-back or deleted handover never goes on terminating nodes.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from . import aws, publish
from .aws import iso
from .settings import Settings

STATE_MACHINE_ENV = "STATE_MACHINE_ARN"
# The schedule that backs up EC2's Delivered event fires this long after the block's start.
SCHEDULE_AFTER_START = timedelta(minutes=2)
# A disabled schedule still needs a time in the future.
DISABLED_SCHEDULE_AHEAD = timedelta(minutes=10)
MODE_STAGED, MODE_WAIT, MODE_ROLLBACK = "staged", "wait", "rollback"


class HandoverFailed(RuntimeError):
    """The Provider framework puts the message in the stack event and cdk deploy prints it."""


def _at(moment) -> str:
    return f"at({moment.strftime('%Y-%m-%dT%H:%M:%S')})"


def _rolling_back(stack_id: str) -> bool:
    stack = aws.client("cloudformation").describe_stacks(StackName=stack_id)["Stacks"][0]
    return stack["StackStatus"].endswith("ROLLBACK_IN_PROGRESS")


def stop_running(machine: str, cause: str, keep: str = "") -> list[str]:
    """Stop every running execution but the one named ``keep``."""
    stepfunctions = aws.client("stepfunctions")
    stopped = []
    for page in stepfunctions.get_paginator("list_executions").paginate(stateMachineArn=machine, statusFilter="RUNNING"):
        for execution in page["executions"]:
            if execution["name"] == keep:
                continue
            stepfunctions.stop_execution(executionArn=execution["executionArn"], cause=cause[:256])
            stopped.append(execution["name"])
    return stopped


def execution_name(request_id: str) -> str:
    """One per deployment request: a retried on_event starts nothing new."""
    return "deploy-" + hashlib.sha256(request_id.encode()).hexdigest()[:24]


def on_event(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or Settings.load()
    machine = os.environ[STATE_MACHINE_ENV]
    physical_id = event.get("PhysicalResourceId") or f"handover-{settings.stack_name}"
    if event["RequestType"] == "Delete":
        stopped = stop_running(machine, "the handover resource was deleted (stack deleted or rolled back)")
        print(f"stopped {stopped or 'nothing'}")
        return {"PhysicalResourceId": physical_id}
    moment = aws.now()
    quiet = {"StartSchedule": _at(moment + DISABLED_SCHEDULE_AHEAD), "StartScheduleState": "DISABLED"}
    data = {"ReportLocation": settings.reports_location, **quiet}
    if _rolling_back(event["StackId"]):
        last = publish.read_state(settings) or {}
        summary = f"Rolled back without a new handover; the last verdict stands: {last.get('summary', 'none recorded')}"
        return {"PhysicalResourceId": physical_id, "Data": {**data, "Mode": MODE_ROLLBACK, "Summary": summary}}
    block = aws.client("ec2").describe_capacity_reservations(
        CapacityReservationIds=[settings.reservation_id])["CapacityReservations"][0]
    start = block.get("StartDate")
    if block["State"] != "active" and start and start > moment:
        summary = (
            f"STAGED: everything but the Trainium instances is deployed; Capacity Block "
            f"{settings.reservation_id} starts at {iso(start)} and the handover (burn-in, replacement "
            f"of failed nodes, cluster test) starts by itself then. Its verdict goes to the alert "
            f"topic, to the SSM parameter {settings.state_parameter} (make handover) and to "
            f"s3://{settings.bucket}/{settings.handover_prefix}"
        )
        publish.set_state(settings, "staged", summary=summary, block_start=iso(start))
        schedule = {"StartSchedule": _at(start + SCHEDULE_AFTER_START), "StartScheduleState": "ENABLED"}
        return {"PhysicalResourceId": physical_id, "Data": {**data, **schedule, "Mode": MODE_STAGED, "Summary": summary}}
    # A retried request keeps its own execution; any other is superseded by it.
    name = execution_name(event["RequestId"])
    superseded = stop_running(machine, "superseded by a new deployment's handover", keep=name)
    if superseded:
        print(f"superseded {', '.join(superseded)}")
    try:
        arn = aws.client("stepfunctions").start_execution(
            stateMachineArn=machine, name=name, input=json.dumps({"trigger": "deploy"}))["executionArn"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ExecutionAlreadyExists":
            raise
        arn = machine.replace(":stateMachine:", ":execution:") + f":{name}"
    print(f"{event['RequestType']}: handover {arn}")
    return {"PhysicalResourceId": physical_id, "Data": {**data, "Mode": MODE_WAIT, "Execution": arn}}


def is_complete(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    if event["RequestType"] == "Delete" or event["Data"]["Mode"] != MODE_WAIT:
        return {"IsComplete": True}
    arn = event["Data"]["Execution"]
    execution = aws.client("stepfunctions").describe_execution(executionArn=arn)
    status = execution["status"]
    if status in ("RUNNING", "PENDING_REDRIVE"):
        return {"IsComplete": False}
    if status != "SUCCEEDED":
        settings = settings or Settings.load()
        raise HandoverFailed(
            f"Handover {arn.rsplit(':', 1)[-1]} ended {status}: {execution.get('error', '')} "
            f"{execution.get('cause', '')}".strip()[:3000]
            + f". Nothing was rolled back: the cluster and its nodes stay; deploy again to hand over. "
            f"Logs: {settings.log_group}"
        )
    verdict = json.loads(execution["output"])["verdict"]
    if verdict["state"] != "ready":
        raise HandoverFailed(
            (f"Cluster NOT ready: {verdict['summary']}. The cluster stays, failed nodes quarantined. "
             f"Verdict: {verdict.get('verdict_uri', '')}")[:4000]
        )
    return {"IsComplete": True, "Data": {"Summary": verdict["summary"], "Verdict": verdict.get("verdict_uri", "")}}
