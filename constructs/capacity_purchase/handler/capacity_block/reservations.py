"""EC2's listing of capacity reservations (bought blocks), which is eventually consistent: a block
just bought may be missing from it for a while."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Mapping, TypeVar

from botocore.exceptions import ClientError

from . import aws
from .request import (
    LOGICAL_ID_TAG,
    OFFERING_ID_TAG,
    STACK_NAME_TAG,
    UPFRONT_FEE_TAG,
    CapacityPurchaseError,
    Identity,
    PurchaseRequest,
    format_time,
)

# A reservation in one of these states holds no capacity and is never adopted.
TERMINAL_STATES = frozenset({"cancelled", "expired", "failed", "payment-failed"})
READY_STATES = frozenset({"scheduled", "active"})
PAYMENT_PENDING_STATES = frozenset({"payment-pending", "pending", "assessing", "delayed"})
LISTING_POLL = timedelta(seconds=15)

T = TypeVar("T")


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    state: str
    instance_type: str
    instance_count: int
    availability_zone: str
    instance_platform: str
    start: datetime
    end: datetime
    tags: Mapping[str, str]

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> "Reservation":
        return cls(
            reservation_id=item["CapacityReservationId"],
            state=item.get("State", ""),
            instance_type=item.get("InstanceType", ""),
            instance_count=item.get("TotalInstanceCount", 0),
            availability_zone=item.get("AvailabilityZone", ""),
            instance_platform=item.get("InstancePlatform", ""),
            start=item["StartDate"],
            end=item["EndDate"],
            tags={tag["Key"]: tag["Value"] for tag in item.get("Tags", ())},
        )

    @property
    def upfront_fee(self) -> Decimal | None:
        fee = self.tags.get(UPFRONT_FEE_TAG)
        return Decimal(fee) if fee else None

    @property
    def offering_id(self) -> str:
        return self.tags.get(OFFERING_ID_TAG, "")

    def mismatches(self, request: PurchaseRequest) -> list[str]:
        """What this block has that the request's settings do not allow."""
        query = request.query
        hours = int((self.end - self.start) / timedelta(hours=1))
        fee = self.upfront_fee
        checks = [
            (self.instance_type != query.instance_type, f"instance type {self.instance_type}"),
            (self.instance_count != query.instance_count, f"{self.instance_count} instances"),
            (hours != query.duration_hours, f"{hours} h"),
            (
                not query.earliest_start <= self.start <= query.latest_start,
                f"start {format_time(self.start)}",
            ),
            (
                bool(query.availability_zone) and self.availability_zone != query.availability_zone,
                f"AZ {self.availability_zone}",
            ),
            (
                self.instance_platform != request.instance_platform,
                f"platform {self.instance_platform}",
            ),
            (fee is not None and fee > request.max_fee_usd, f"upfront fee {fee} USD"),
        ]
        return [text for mismatch, text in checks if mismatch]


def find_tagged(client, identity: Identity) -> list[Reservation]:
    """Reservations in any state tagged for this stack name and logical id (tags re-checked here,
    so a filter the service ignored could not make a stranger's block look like ours)."""
    wanted = {STACK_NAME_TAG: identity.stack_name, LOGICAL_ID_TAG: identity.logical_id}
    filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in wanted.items()]
    pages = client.get_paginator("describe_capacity_reservations").paginate(Filters=filters)
    found = [Reservation.from_api(item) for page in pages for item in page["CapacityReservations"]]
    return [r for r in found if all(r.tags.get(k) == v for k, v in wanted.items())]


def find_adoptable(client, identity: Identity) -> list[Reservation]:
    """The live reservations tagged for this stack name and logical id."""
    return [r for r in find_tagged(client, identity) if r.state not in TERMINAL_STATES]


def lookup(client, reservation_id: str) -> Reservation | None:
    """The reservation by id, or None while (or once) EC2 does not list it."""
    try:
        response = client.describe_capacity_reservations(CapacityReservationIds=[reservation_id])
    except ClientError as error:
        if not error.response.get("Error", {}).get("Code", "").endswith("NotFound"):
            raise
        return None
    items = response["CapacityReservations"]
    return Reservation.from_api(items[0]) if items else None


def describe_reservation(client, reservation_id: str) -> Reservation:
    """The reservation this resource holds, which EC2 must list."""
    reservation = lookup(client, reservation_id)
    if reservation is None:
        raise CapacityPurchaseError(
            f"capacity reservation {reservation_id}, held by this resource, is not listed by EC2 "
            "(a block drops out of the listing some time after it ends)"
        )
    return reservation


def wait_for(find: Callable[[], T | None], within: timedelta) -> T | None:
    """``find()`` again, every LISTING_POLL, until it finds something or ``within`` has passed:
    EC2 lists a block only some time after it was bought."""
    deadline = aws.utcnow() + within
    found = find()
    while found is None and aws.utcnow() < deadline:
        aws.sleep(LISTING_POLL.total_seconds())
        found = find()
    return found
