"""Holding a block instead of buying one: the live block tagged for this resource, or one this
environment remembers buying."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import memory
from .request import (
    LOGICAL_ID_TAG,
    STACK_NAME_TAG,
    CapacityPurchaseError,
    Identity,
    PurchaseRequest,
    format_time,
)
from .reservations import TERMINAL_STATES, Reservation, describe_reservation
from .results import MODE_DRY_RUN, block_text, fee_text, held, result


def adopt(
    candidates: list[Reservation], request: PurchaseRequest, physical_id: str
) -> dict[str, Any]:
    """Adopt the one live block tagged for this resource (in a dry run, say it would)."""
    if len(candidates) > 1:
        ids = ", ".join(r.reservation_id for r in candidates)
        raise CapacityPurchaseError(
            f"several live capacity reservations are tagged for this resource ({ids}); refusing "
            f"to buy or to pick one. Remove the {STACK_NAME_TAG} and {LOGICAL_ID_TAG} tags from "
            "all but the one to keep, then deploy again"
        )
    reservation = candidates[0]
    mismatches = reservation.mismatches(request)
    if mismatches:
        raise CapacityPurchaseError(
            f"capacity reservation {reservation.reservation_id} ({block_text(reservation)}) is "
            f"already tagged for this resource but does not fit the settings "
            f"({', '.join(mismatches)}); refusing to buy a second block. Restore the settings it "
            f"was bought with, or remove its {STACK_NAME_TAG} and {LOGICAL_ID_TAG} tags to buy "
            "a new one (it stays billed until its end either way)"
        )
    text = f"{reservation.reservation_id} ({block_text(reservation)}, {reservation.state})"
    if not request.confirmed:
        return result(
            MODE_DRY_RUN,
            physical_id,
            reservation,
            "",
            f"DRY RUN: this stack already holds {text}; with capacityPurchaseConfirm=true it is "
            "adopted and nothing is bought",
        )
    return held(
        reservation,
        f"ADOPTED {text} for {fee_text(reservation)}, bought earlier for this stack; "
        "nothing was bought now",
        await_payment=True,
    )


def remembered(
    describe, request: PurchaseRequest, identity: Identity, physical_id: str
) -> dict[str, Any] | None:
    """A purchase this environment sent that EC2's tag search does not list yet: adopt it by id,
    or refuse while its outcome is unknown. None: nothing live is remembered, go on."""
    sent = memory.PurchaseMemory.of(identity)
    record = sent.recall()
    if record is None:
        return None
    reservation_id = record.get("CapacityReservationId")
    if reservation_id:
        reservation = describe_reservation(describe, reservation_id)
        if reservation.state not in TERMINAL_STATES:
            return adopt([reservation], request, physical_id)
        # Ended (e.g. payment-failed): it holds nothing, so the next block may be bought.
        sent.forget()
        return None
    expires = datetime.fromisoformat(record["SentAt"]) + memory.MARKER_TTL
    raise CapacityPurchaseError(
        f"this function sent PurchaseCapacityBlock for offering {record['OfferingId']} at "
        f"{record['SentAt']} and its outcome is unknown; EC2 does not list a block tagged for "
        "this resource yet, so nothing is bought again. Deploy again in a few minutes: a block "
        f"bought then is adopted; if none was bought, this function buys again from "
        f"{format_time(expires)}. {identity.lookup_hint()}"
    )
