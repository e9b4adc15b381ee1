"""Node reports as the handover reads them: the newest per instance, checked against the report
schema before anything in it is believed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Iterable

from trn_burnin import schema

MAX_REASONS_PER_NODE = 3
# trn_burnin.publish names each report <instance id>-<UTC timestamp>.json under the prefix.
REPORT_KEY = re.compile(r"(?P<instance>i-[0-9a-f]+)-[^/]+\.json")
MAX_PROBLEMS_SHOWN = 3


@dataclass(frozen=True)
class NodeOutcome:
    instance_id: str
    passed: bool
    reasons: tuple[str, ...]
    chip_fractions_of_peak: tuple[float, ...] = ()
    report_uri: str | None = None

    def describe(self) -> str:
        return f"{self.instance_id}: " + "; ".join(self.reasons[:MAX_REASONS_PER_NODE])


@dataclass(frozen=True)
class ReportObject:
    key: str
    instance_id: str
    modified: datetime
    etag: str


# A warm function reads each report once: an object's ETag changes with its content.
_READ: dict[tuple[str, str, str], "NodeOutcome"] = {}
_READ_LIMIT = 4096


@cache
def _report_schema() -> dict[str, Any]:
    return schema.load(schema.REPORT_SCHEMA)


def list_reports(s3: Any, bucket: str, prefix: str) -> list[ReportObject]:
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            match = REPORT_KEY.fullmatch(item["Key"][len(prefix):])
            if match:
                found.append(ReportObject(item["Key"], match["instance"], item["LastModified"], item.get("ETag", "")))
    return found


def newest_by_instance(objects: Iterable[ReportObject], instances: set[str]) -> dict[str, ReportObject]:
    """The newest report of each of ``instances``: a re-run on the same instance writes a newer one."""
    newest: dict[str, ReportObject] = {}
    for item in objects:
        if item.instance_id in instances and (
            item.instance_id not in newest or item.modified > newest[item.instance_id].modified
        ):
            newest[item.instance_id] = item
    return newest


def read_outcome(s3: Any, bucket: str, item: ReportObject) -> NodeOutcome:
    """The node's verdict, or its failure when the report cannot be believed; never raises."""
    cached = (bucket, item.key, item.etag)
    if item.etag and cached in _READ:
        return _READ[cached]
    if len(_READ) >= _READ_LIMIT:
        _READ.clear()
    outcome = _judge(s3, bucket, item)
    if item.etag:
        _READ[cached] = outcome
    return outcome


def _judge(s3: Any, bucket: str, item: ReportObject) -> NodeOutcome:
    uri = f"s3://{bucket}/{item.key}"
    try:
        document = json.loads(s3.get_object(Bucket=bucket, Key=item.key)["Body"].read())
    except ValueError as error:
        return _unreadable(item, uri, f"not JSON: {error}")
    problems = schema.problems(document, _report_schema())
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f" (+{len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        return _unreadable(item, uri, f"does not match the report schema: {shown}{more}")
    named = document["node"]["instance_id"]
    if named != item.instance_id:
        return _unreadable(item, uri, f"it describes instance {named}, not {item.instance_id}")
    verdict = document["verdict"]
    peak_per_chip = document["thresholds"]["peak_tflops_per_core"] * document["expected"]["cores_per_device"]
    fractions = tuple(chip["tflops"] / peak_per_chip for chip in document["chips"]) if peak_per_chip else ()
    reasons = tuple(failure["message"] for failure in verdict["failures"])
    passed = verdict["passed"] and not reasons
    if verdict["passed"] and reasons:
        reasons = ("report says passed but lists failures: " + reasons[0], *reasons[1:])
    return NodeOutcome(item.instance_id, passed, reasons or ("passed",), fractions, uri)


def _unreadable(item: ReportObject, uri: str, why: str) -> NodeOutcome:
    return NodeOutcome(item.instance_id, False, (f"unreadable report {uri}: {why}",), (), uri)
