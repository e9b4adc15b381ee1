"""Replacements as durable records in the reports bucket, so that no handover (a retry, a redeploy,
the run at the block's start) ever replaces the same instance twice or a node's slot more often
than allowed.

``<prefix>replacements/<instance>.json`` is created, with a conditional write only one writer can
win, *before* the instance is terminated. ``<prefix>successors/<instance>.json`` ties an instance
that launched into the block after a replacement to the slot it fills, so it inherits the slot's
count.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Iterable

from botocore.exceptions import ClientError

from . import aws
from .aws import iso, parse_time
from .fleet import Instance

LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict")


@dataclass(frozen=True)
class Replacement:
    instance_id: str  # the failed instance, terminated for a new one
    root: str  # the slot's first instance: what "per failed node" counts
    generation: int  # how many replacements this slot has had, this one included
    requested_at: str
    reason: str


@dataclass(frozen=True)
class Successor:
    instance_id: str
    replaces: str


class Ledger:
    def __init__(self, s3: Any, bucket: str, prefix: str):
        self._s3, self._bucket = s3, bucket
        self._replacements_prefix = f"{prefix}replacements/"
        self._successors_prefix = f"{prefix}successors/"
        self.replacements: dict[str, Replacement] = {}
        self.successors: dict[str, Successor] = {}

    @classmethod
    def load(cls, s3: Any, bucket: str, prefix: str) -> "Ledger":
        ledger = cls(s3, bucket, prefix)
        for document in ledger._documents(ledger._replacements_prefix):
            record = Replacement(**document)
            ledger.replacements[record.instance_id] = record
        for document in ledger._documents(ledger._successors_prefix):
            record = Successor(**document)
            ledger.successors[record.instance_id] = record
        return ledger

    def _documents(self, prefix: str) -> Iterable[dict[str, Any]]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                body = self._s3.get_object(Bucket=self._bucket, Key=item["Key"])["Body"].read()
                yield json.loads(body)

    def _create(self, key: str, document: dict[str, Any]) -> bool:
        """True when this call created ``key``; False when another writer had."""
        try:
            self._s3.put_object(
                Bucket=self._bucket, Key=key, Body=json.dumps(document).encode(),
                ContentType="application/json", IfNoneMatch="*",
            )  # fmt: skip
        except ClientError as error:
            if error.response["Error"]["Code"] in LOST_RACE:
                return False
            raise
        return True

    def root(self, instance_id: str) -> str:
        successor = self.successors.get(instance_id)
        if successor and successor.replaces in self.replacements:
            return self.replacements[successor.replaces].root
        return instance_id

    def generation(self, instance_id: str) -> int:
        """Replacements the slot of ``instance_id`` has had before it."""
        successor = self.successors.get(instance_id)
        if successor and successor.replaces in self.replacements:
            return self.replacements[successor.replaces].generation
        return 0

    def claim(self, instance_id: str, reason: str, at: datetime) -> None:
        """Record that ``instance_id`` is to be replaced (a writer that lost the race to another
        finds the other's record on its next load; both terminate the same instance, never more)."""
        record = Replacement(
            instance_id=instance_id, root=self.root(instance_id),
            generation=self.generation(instance_id) + 1, requested_at=iso(at), reason=reason,
        )  # fmt: skip
        self._create(f"{self._replacements_prefix}{instance_id}.json", asdict(record))
        self.replacements[instance_id] = record

    def successor_of(self, instance_id: str) -> str | None:
        return next((s.instance_id for s in self.successors.values() if s.replaces == instance_id), None)

    def assign_successors(self, instances: Iterable[Instance]) -> None:
        """Tie each instance that launched after a replacement was requested, and fills no slot
        yet, to the oldest replacement still waiting for one."""
        waiting = sorted(
            (r for r in self.replacements.values() if self.successor_of(r.instance_id) is None),
            key=lambda r: (r.requested_at, r.instance_id),
        )
        candidates = [
            i for i in instances
            if i.instance_id not in self.successors and i.instance_id not in self.replacements
        ]  # fmt: skip
        for record in waiting:
            requested = parse_time(record.requested_at)
            match = next((i for i in candidates if i.launched >= requested), None)
            if match is None:
                continue
            candidates.remove(match)
            successor = Successor(match.instance_id, record.instance_id)
            if self._create(f"{self._successors_prefix}{match.instance_id}.json", asdict(successor)):
                self.successors[match.instance_id] = successor
