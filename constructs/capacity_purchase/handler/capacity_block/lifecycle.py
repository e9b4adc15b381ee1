"""The resource's lifecycle: create, update and delete (on_event), and is_complete."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Mapping

from . import aws, records
from .adoption import adopt, recorded_blocks
from .offerings import fetch_offerings, select_offering
from .purchase import buy
from .request import (
    DRY_RUN_PREFIX,
    CapacityPurchaseError,
    Identity,
    PurchaseRequest,
    changed_purchase_properties,
    dry_run_physical_id,
)
from .reservations import (
    PAYMENT_PENDING_STATES,
    READY_STATES,
    describe_reservation,
    find_adoptable,
    lookup,
)
from .results import AWAIT_BLOCK, MODE_DRY_RUN, block_text, fee_text, held, result

LOG = logging.getLogger(__name__)


def create(event: Mapping[str, Any]) -> dict[str, Any]:
    return _acquire(event, *_parse(event))


def update(event: Mapping[str, Any]) -> dict[str, Any]:
    request, identity = _parse(event)
    if event["PhysicalResourceId"].startswith(DRY_RUN_PREFIX):
        # Nothing is held yet, so any setting may change; a confirmation now buys.
        return _acquire(event, request, identity)
    return _keep(event, request)


def delete(event: Mapping[str, Any]) -> dict[str, Any]:
    physical_id = event["PhysicalResourceId"]
    if physical_id.startswith(DRY_RUN_PREFIX):
        LOG.info("dry run %s deleted: nothing was bought", physical_id)
    else:
        LOG.warning(
            "capacity block %s is NOT cancelled (Capacity Blocks cannot be cancelled): it "
            "remains, and is billed, until its end date; its purchase record is kept",
            physical_id,
        )
    return {"PhysicalResourceId": physical_id}


def _parse(event: Mapping[str, Any]) -> tuple[PurchaseRequest, Identity]:
    return PurchaseRequest.from_properties(event["ResourceProperties"]), Identity.from_event(event)


def _acquire(
    event: Mapping[str, Any], request: PurchaseRequest, identity: Identity
) -> dict[str, Any]:
    """Adopt the block this resource's record or tags name, else find the offering and, if
    confirmed, buy it."""
    physical_id = dry_run_physical_id(event["ResourceProperties"])
    describe = aws.ec2_client("describe")
    # The record first: EC2's listing may not show yet what an earlier attempt bought.
    intent = records.read(identity)
    if intent is not None:
        recorded = recorded_blocks(describe, identity, intent, request)
        if recorded:
            return adopt(recorded, request, physical_id)
    candidates = find_adoptable(describe, identity)
    if candidates:
        return adopt(candidates, request, physical_id)
    query = request.query
    query.check_window(aws.utcnow())
    offering = select_offering(fetch_offerings(describe, query), query, request.max_fee_usd)
    if not request.confirmed:
        return result(
            MODE_DRY_RUN,
            physical_id,
            offering,
            "",
            f"DRY RUN: would buy {offering.offering_id} {block_text(offering)} for "
            f"{fee_text(offering)}; set capacityPurchaseConfirm=true to buy",
        )
    return buy(request, identity, offering, intent, describe, physical_id)


def _keep(event: Mapping[str, Any], request: PurchaseRequest) -> dict[str, Any]:
    """An update of the block this resource holds: settings it satisfies, or a refusal."""
    physical_id = event["PhysicalResourceId"]
    reservation = describe_reservation(aws.ec2_client("describe"), physical_id)
    old = event.get("OldResourceProperties") or {}
    changed = changed_purchase_properties(old, event["ResourceProperties"])
    mismatches = reservation.mismatches(request)
    if changed and mismatches:
        raise CapacityPurchaseError(
            f"refusing to change {', '.join(changed)}: this resource holds capacity block "
            f"{physical_id} ({block_text(reservation)}), which does not fit the new settings "
            f"({', '.join(mismatches)}). A Capacity Block cannot be exchanged, modified or "
            "cancelled. Restore the previous settings; to buy another block, add a new "
            "capacity purchase (a new construct id) instead"
        )
    note = f"; changed {', '.join(changed)} still satisfied" if changed else ""
    return held(
        reservation,
        f"KEEPS {physical_id}: {block_text(reservation)} for {fee_text(reservation)}, "
        f"{reservation.state}{note}; tags are set at purchase and not rewritten; "
        "nothing was bought",
        await_payment=False,
    )


def is_complete(event: Mapping[str, Any]) -> dict[str, Any]:
    """Wait for a block bought or adopted by on_event to be listed and to leave payment-pending;
    all else is done at once."""
    listed_by = event.get(AWAIT_BLOCK)
    if event["RequestType"] == "Delete" or not listed_by:
        return {"IsComplete": True}
    reservation_id = event["PhysicalResourceId"]
    reservation = lookup(aws.ec2_client("describe"), reservation_id)
    if reservation is None:
        if aws.utcnow() < datetime.fromisoformat(listed_by):
            LOG.info("capacity reservation %s is not listed by EC2 yet", reservation_id)
            return {"IsComplete": False}
        raise CapacityPurchaseError(
            f"capacity block {reservation_id}, held by this resource, is still not listed by EC2 "
            f"at {listed_by}; nothing is bought again, as its purchase record names it. Check it "
            f"(aws ec2 describe-capacity-reservations --capacity-reservation-ids "
            f"{reservation_id}) before deploying again"
        )
    state = reservation.state
    LOG.info("capacity reservation %s is %s", reservation_id, state)
    if state in READY_STATES:
        return {"IsComplete": True}
    if state in PAYMENT_PENDING_STATES:
        return {"IsComplete": False}
    if state == "payment-failed":
        raise CapacityPurchaseError(
            f"payment for capacity block {reservation_id} failed, so EC2 will not deliver it. "
            "Check the account's payment method. A block in payment-failed is never adopted, so "
            "the next deployment with capacityPurchaseConfirm=true buys a new one"
        )
    raise CapacityPurchaseError(
        f"capacity block {reservation_id} is {state}, not scheduled or active, so it cannot be "
        "used. Check it in the EC2 console before deploying again"
    )
