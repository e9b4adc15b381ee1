"""EC2's listing of capacity reservations (bought blocks), which is eventually consistent: a block
just bought may be missing from it for a while."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Mapping

from botocore.exceptions import ClientError

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


def find_adoptable(client, identity: Identity) -> list[Reservation]:
    """Live reservations tagged for this stack name and logical id (tags re-checked here, so a
    filter the service ignored could not make a stranger's block look like ours)."""
    wanted = {STACK_NAME_TAG: identity.stack_name, LOGICAL_ID_TAG: identity.logical_id}
    filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in wanted.items()]
    pages = client.get_paginator("describe_capacity_reservations").paginate(Filters=filters)
    found = [Reservation.from_api(item) for page in pages for item in page["CapacityReservations"]]
    return [
        r
        for r in found
        if r.state not in TERMINAL_STATES and all(r.tags.get(k) == v for k, v in wanted.items())
    ]


def describe_reservation(client, reservation_id: str) -> Reservation:
    try:
        response = client.describe_capacity_reservations(CapacityReservationIds=[reservation_id])
    except ClientError as error:
        if not error.response.get("Error", {}).get("Code", "").endswith("NotFound"):
            raise
        response = {"CapacityReservations": []}
    if not response["CapacityReservations"]:
        raise CapacityPurchaseError(
            f"capacity reservation {reservation_id}, held by this resource, is not listed by EC2 "
            "(a block drops out of the listing some time after it ends)"
        )
    return Reservation.from_api(response["CapacityReservations"][0])
