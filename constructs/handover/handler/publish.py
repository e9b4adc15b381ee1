"""Where the handover's state reaches people: the SSM parameter /trn-kit/<stack>/handover (what
`make handover` prints), the verdict document in the reports bucket, and the alert topic."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from . import aws
from .aws import iso
from .settings import Settings

# A standard SSM parameter holds 4 KB: the parameter keeps the gist, the bucket the whole verdict.
PARAMETER_LIMIT = 4096
MAX_LISTED = 8
REASON_LIMIT = 300
SUBJECT_LIMIT = 100


def _compact(state: dict[str, Any]) -> str:
    """The state as JSON within the parameter's limit: whole while it fits, else with fewer failed
    nodes listed (``failed_count`` says how many there were) and a shorter summary; always valid JSON."""
    text = json.dumps(state, separators=(",", ":"))
    failed = state.get("failed", [])
    for listed, summary_limit in ((MAX_LISTED, 1000), (3, 600), (0, 300)):
        if len(text) <= PARAMETER_LIMIT:
            return text
        trimmed = {**state, "failed": failed[:listed], "failed_count": len(failed), "truncated": True,
                   "summary": str(state.get("summary", ""))[:summary_limit]}
        text = json.dumps(trimmed, separators=(",", ":"))
    return text


def set_state(settings: Settings, state: str, **details: Any) -> None:
    document = {"state": state, "stack": settings.stack_name, "updated_at": iso(aws.now()), **details}
    aws.client("ssm").put_parameter(
        Name=settings.state_parameter, Value=_compact(document), Type="String", Overwrite=True
    )


def read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        value = aws.client("ssm").get_parameter(Name=settings.state_parameter)["Parameter"]["Value"]
        return json.loads(value)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ParameterNotFound":
            return None
        raise
    except ValueError:
        return None


def verdict_key(settings: Settings, run_id: str) -> str:
    return f"{settings.handover_prefix}{run_id}/verdict.json"


def publish_verdict(settings: Settings, run_id: str, verdict: dict[str, Any]) -> str:
    """All three places; returns the verdict's S3 URI."""
    key = verdict_key(settings, run_id)
    aws.client("s3").put_object(
        Bucket=settings.bucket, Key=key, Body=json.dumps(verdict, indent=1).encode(),
        ContentType="application/json",
    )  # fmt: skip
    uri = f"s3://{settings.bucket}/{key}"
    set_state(settings, verdict["state"], summary=verdict["summary"], verdict=uri, run_id=run_id,
              expected_nodes=verdict["expected_nodes"], passed_nodes=verdict["passed_nodes"],
              failed=[{"instance_id": f["instance_id"], "reason": "; ".join(f["reasons"])[:REASON_LIMIT]}
                      for f in verdict.get("failed", [])])
    ready = verdict["state"] == "ready"
    if ready:
        arm_node_alarm(settings, True)
    subject = (f"{settings.stack_name}: Trainium cluster {'ready' if ready else 'NOT ready'} "
               f"({verdict['passed_nodes']}/{verdict['expected_nodes']} nodes)")
    notify(settings, subject, f"{verdict['summary']}\n\nVerdict: {uri}\nReports: {settings.reports_location}")
    return uri


def notify(settings: Settings, subject: str, message: str) -> None:
    aws.client("sns").publish(TopicArn=settings.topic_arn, Subject=subject[:SUBJECT_LIMIT], Message=message)


def arm_node_alarm(settings: Settings, armed: bool) -> None:
    """The node-count alarm watches only a handed-over cluster: before the block's start and after
    its end there are no nodes by design. Never fails the caller: the verdict matters more."""
    cloudwatch = aws.client("cloudwatch")
    change = cloudwatch.enable_alarm_actions if armed else cloudwatch.disable_alarm_actions
    try:
        change(AlarmNames=[settings.node_alarm])
    except ClientError as error:
        print(f"could not {'arm' if armed else 'disarm'} the alarm {settings.node_alarm}: {error}")
