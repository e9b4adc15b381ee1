"""Purchases this execution environment sent, remembered in its /tmp (a warm Lambda keeps /tmp
between invocations): EC2's tag search may not list a block bought moments ago."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from . import aws
from .offerings import Offering
from .request import Identity

LOG = logging.getLogger(__name__)

# Where sent purchases are remembered and for how long: well beyond the few seconds EC2's
# describe calls take to list a new block.
MARKER_DIR = Path(tempfile.gettempdir())
MARKER_TTL = timedelta(hours=1)


@dataclass(frozen=True)
class PurchaseMemory:
    """This execution environment's record of the purchase it sent for one resource."""

    path: Path

    @classmethod
    def of(cls, identity: Identity) -> "PurchaseMemory":
        key = hashlib.sha256(f"{identity.stack_id}/{identity.logical_id}".encode()).hexdigest()
        return cls(MARKER_DIR / f"trn-kit-purchase-{key[:32]}.json")

    def recall(self) -> dict[str, str] | None:
        try:
            record = json.loads(self.path.read_text())
            sent_at = datetime.fromisoformat(record["SentAt"])
            age = aws.utcnow() - sent_at
        except (OSError, ValueError, KeyError, TypeError):  # absent, or not what _write writes
            return None
        return record if age < MARKER_TTL else None

    def sending(self, offering: Offering) -> None:
        """Before the purchase call; if this cannot be written, nothing is bought."""
        self._write({"OfferingId": offering.offering_id, "SentAt": aws.utcnow().isoformat()})

    def bought(self, reservation_id: str) -> None:
        """After a purchase: best effort, so a full /tmp never hides a block that was bought."""
        record = self.recall() or {"SentAt": aws.utcnow().isoformat()}
        try:
            self._write({**record, "CapacityReservationId": reservation_id})
        except OSError as error:
            LOG.warning("could not remember purchase %s in %s: %s", reservation_id, self.path, error)

    def forget(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as error:
            LOG.warning("could not forget the purchase memory %s: %s", self.path, error)

    def _write(self, record: dict[str, str]) -> None:
        # Replaced whole: a failed write never leaves the previous record truncated.
        staging = self.path.with_name(self.path.name + ".new")
        staging.write_text(json.dumps(record))
        os.replace(staging, self.path)
