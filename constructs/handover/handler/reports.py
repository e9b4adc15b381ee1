"""Node reports as the handover reads them: the newest per instance, checked against the report
schema before anything in it is believed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from trn_burnin.report_check import UnreadableReport, read_node_report

MAX_REASONS_PER_NODE = 3
# trn_burnin.publish names each report <instance id>-<UTC timestamp>.json under the prefix.
REPORT_KEY = re.compile(r"(?P<instance>i-[0-9a-f]+)-[^/]+\.json")


@dataclass(frozen=True)
class NodeOutcome:
    instance_id: str
    passed: bool
    reasons: tuple[str, ...]
    chip_fractions_of_peak: tuple[float, ...] = ()
    report_uri: str | None = None
    thresholds: str = ""  # the per-core rules the node was judged by, in words

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
    body = s3.get_object(Bucket=bucket, Key=item.key)["Body"].read()
    try:
        reading = read_node_report(body)
        named = json.loads(body)["node"]["instance_id"]
    except UnreadableReport as error:
        return _unreadable(item, uri, str(error))
    if named != item.instance_id:
        return _unreadable(item, uri, f"it describes instance {named}, not {item.instance_id}")
    return NodeOutcome(item.instance_id, reading.passed, reading.reasons or ("passed",),
                       reading.chip_fractions_of_peak, uri, reading.thresholds)


def _unreadable(item: ReportObject, uri: str, why: str) -> NodeOutcome:
    return NodeOutcome(item.instance_id, False, (f"unreadable report {uri}: {why}",), (), uri)
