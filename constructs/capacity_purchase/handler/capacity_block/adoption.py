"""Holding a block instead of buying one: the block this resource's purchase record names, or the
live block tagged for it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from . import aws, records
from .request import (
    LOGICAL_ID_TAG,
    STACK_ID_TAG,
    STACK_NAME_TAG,
    CapacityPurchaseError,
    Identity,
    PurchaseRequest,
    format_time,
)
from .reservations import TERMINAL_STATES, Reservation, find_tagged, lookup, wait_for
from .results import MODE_DRY_RUN, block_text, fee_text, held, result

# How long on_event waits for EC2 to list the block a purchase record stands for; the
# construct's ON_EVENT_TIMEOUT leaves room for it.
LISTING_WAIT = timedelta(minutes=3)


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


def recorded_blocks(
    describe, identity: Identity, intent: records.Intent, request: PurchaseRequest
) -> list[Reservation]:
    """The live block ``intent`` stands for, once EC2 lists it (waiting up to LISTING_WAIT); none
    when the record holds no block: released, or its block has ended. Raises, buying nothing,
    when EC2 lists no such block in time."""
    if intent.state == records.NOT_BOUGHT or aws.utcnow() >= intent.ends_at:
        return []
    if intent.reservation_id:
        found = wait_for(lambda: lookup(describe, intent.reservation_id), LISTING_WAIT)
        blocks = [found] if found else []
    else:
        blocks = wait_for(lambda: _bought_for(describe, identity, intent), LISTING_WAIT) or []
        if len(blocks) == 1 and request.confirmed:
            records.mark_bought(identity, intent, blocks[0].reservation_id)
    if not blocks:
        raise _unlisted(identity, intent)
    # Ended (e.g. payment-failed): it holds nothing, so the next block may be bought.
    return [block for block in blocks if block.state not in TERMINAL_STATES]


def _bought_for(describe, identity: Identity, intent: records.Intent) -> list[Reservation] | None:
    """What the intent's purchase created, in any state: blocks tagged with this stack id, this
    logical id and the intended offering; None while EC2 lists none."""
    return [
        r
        for r in find_tagged(describe, identity)
        if r.tags.get(STACK_ID_TAG) == identity.stack_id and r.offering_id == intent.offering_id
    ] or None


def _unlisted(identity: Identity, intent: records.Intent) -> CapacityPurchaseError:
    waited = f"{LISTING_WAIT.total_seconds() / 60:.0f} minutes"
    sent = f"offering {intent.offering_id}, sent {format_time(intent.sent_at)}"
    if intent.reservation_id:
        return CapacityPurchaseError(
            f"capacity block {intent.reservation_id} was bought for this resource ({sent}), but "
            f"EC2 does not list it after {waited}; nothing is bought again. Deploy again in a few "
            "minutes: it is adopted once listed (aws ec2 describe-capacity-reservations "
            f"--capacity-reservation-ids {intent.reservation_id})"
        )
    return CapacityPurchaseError(
        f"PurchaseCapacityBlock was sent for this resource ({sent}) and its outcome is unknown; "
        f"EC2 lists no block of that offering tagged for this stack after {waited}, so nothing "
        f"is bought again. {identity.lookup_hint()}. Deploy again in a few minutes: a block "
        "listed then is adopted. If none ever is, nothing was bought; then delete this "
        f"resource's purchase record to let the next deployment buy: "
        f"{records.deletion_command(identity)}"
    )
