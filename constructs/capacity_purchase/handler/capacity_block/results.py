"""What on_event returns to the Provider framework: the physical id and the attributes."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from . import aws
from .offerings import Offering
from .request import format_fee, format_time
from .reservations import Reservation

LOG = logging.getLogger(__name__)

MODE_DRY_RUN = "dry-run"
MODE_PURCHASED = "purchased"
MODE_ADOPTED = "adopted"
# Custom on_event field the Provider framework hands on to is_complete: set only when this
# invocation bought or adopted a block, the only case with a payment to wait for. Its value is
# the time until which is_complete waits for EC2 to list the block at all (ISO-8601 UTC).
AWAIT_BLOCK = "AwaitBlockListedBy"
# EC2 lists a block bought moments ago only after a while.
BLOCK_LISTING_WAIT = timedelta(minutes=15)


def block_text(block: Offering | Reservation) -> str:
    return (
        f"{block.instance_count} x {block.instance_type} in {block.availability_zone} "
        f"{format_time(block.start)}..{format_time(block.end)}"
    )


def fee_text(block: Offering | Reservation) -> str:
    if block.upfront_fee is None:
        return "an unrecorded fee"
    return f"{format_fee(block.upfront_fee)} USD"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def result(
    mode: str,
    physical_id: str,
    block: Offering | Reservation,
    reservation_id: str,
    summary: str,
    await_payment: bool = False,
) -> dict[str, Any]:
    LOG.info("%s", summary)
    known_fee = block.upfront_fee is not None
    response: dict[str, Any] = {
        "PhysicalResourceId": physical_id,
        "Data": {
            "CapacityReservationId": reservation_id,
            "AvailabilityZone": block.availability_zone,
            "InstanceType": block.instance_type,
            "InstanceCount": str(block.instance_count),
            "StartDate": iso(block.start),
            "EndDate": iso(block.end),
            "UpfrontFee": format_fee(block.upfront_fee) if known_fee else "",
            "CurrencyCode": "USD" if known_fee else "",
            "OfferingId": block.offering_id,
            "Mode": mode,
            "Summary": summary,
        },
    }
    if await_payment:
        response[AWAIT_BLOCK] = iso(aws.utcnow() + BLOCK_LISTING_WAIT)
    return response


def held(reservation: Reservation, summary: str, await_payment: bool) -> dict[str, Any]:
    """The result for a block this resource holds without buying it now."""
    rid = reservation.reservation_id
    return result(MODE_ADOPTED, rid, reservation, rid, summary, await_payment)
