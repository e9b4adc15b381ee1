"""Offering choice: which Capacity Block offering, if any, the request may buy (the selection rule
in the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

import botocore

from .request import CapacityPurchaseError, OfferingQuery, format_fee


@dataclass(frozen=True)
class Offering:
    offering_id: str
    instance_type: str
    instance_count: int
    availability_zone: str
    start: datetime
    end: datetime
    duration_hours: int
    upfront_fee: Decimal
    currency: str
    ultraserver_type: str | None = None
    ultraserver_count: int | None = None
    segments: int = 1

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> "Offering":
        return cls(
            offering_id=item["CapacityBlockOfferingId"],
            instance_type=item.get("InstanceType", ""),
            instance_count=item.get("InstanceCount", 0),
            availability_zone=item.get("AvailabilityZone", ""),
            start=item["StartDate"],
            end=item["EndDate"],
            duration_hours=item.get("CapacityBlockDurationHours", 0),
            upfront_fee=Decimal(item["UpfrontFee"]),
            currency=item.get("CurrencyCode", ""),
            ultraserver_type=item.get("UltraserverType"),
            ultraserver_count=item.get("UltraserverCount"),
            segments=len(item.get("CapacityBlockOfferingSegments") or ()) or 1,
        )


def rejection(query: OfferingQuery, offering: Offering) -> str | None:
    """Why ``offering`` does not fit ``query`` (a short reason, counted in messages), or None."""
    if query.ultraserver_type:
        wanted = (query.ultraserver_type, query.ultraserver_count)
        if (offering.ultraserver_type, offering.ultraserver_count) != wanted:
            return "other UltraServer type or count"
        # UltraServer offerings may leave the instance fields out; present ones must agree.
        if offering.instance_type and offering.instance_type != query.instance_type:
            return "other instance type"
        if offering.instance_count and offering.instance_count != query.instance_count:
            return "other instance count"
    elif offering.instance_type != query.instance_type:
        return "other instance type"
    elif offering.instance_count != query.instance_count:
        return "other instance count"
    if offering.duration_hours != query.duration_hours:
        return "other duration"
    if not query.earliest_start <= offering.start <= query.latest_start:
        return "start outside the window"
    if query.availability_zone and offering.availability_zone != query.availability_zone:
        return "other AZ"
    if offering.segments > 1:
        return "split into several segments"
    return None


def fill(query: OfferingQuery, offering: Offering) -> Offering:
    """A fitting offering with the instance fields an UltraServer offering left out taken
    from the query (rejection() has checked that the fields it does report agree)."""
    return replace(
        offering,
        instance_type=offering.instance_type or query.instance_type,
        instance_count=offering.instance_count or query.instance_count,
    )


def require_ultraserver_support(client) -> None:
    """Fail before any search or purchase when this botocore predates UltraServer Capacity
    Blocks. The kit does not bundle boto3, so the Lambda runtime's copy decides; an old one would
    otherwise fail with a bare parameter-validation error."""
    operation = client.meta.service_model.operation_model("DescribeCapacityBlockOfferings")
    if "UltraserverType" not in operation.input_shape.members:
        raise CapacityPurchaseError(
            f"this botocore ({botocore.__version__}) does not know UltraServer Capacity Blocks "
            "(DescribeCapacityBlockOfferings UltraserverType); use a newer boto3 or Lambda "
            "runtime. Nothing was bought"
        )


def fetch_offerings(client, query: OfferingQuery) -> list[Offering]:
    if query.ultraserver_type:
        require_ultraserver_support(client)
    paginator = client.get_paginator("describe_capacity_block_offerings")
    pages = paginator.paginate(**query.api_params())
    return [Offering.from_api(item) for page in pages for item in page["CapacityBlockOfferings"]]


def partition(
    offerings: Iterable[Offering], query: OfferingQuery
) -> tuple[list[Offering], dict[str, int]]:
    """The offerings that fit ``query`` and, per reason, how many did not."""
    fitting: list[Offering] = []
    rejected: dict[str, int] = {}
    for offering in offerings:
        reason = rejection(query, offering)
        if reason is None:
            fitting.append(fill(query, offering))
        else:
            rejected[reason] = rejected.get(reason, 0) + 1
    return fitting, rejected


def no_match_message(
    query: OfferingQuery, returned: int, rejected: Mapping[str, int], cap: str = ""
) -> str:
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(rejected.items()))
    return f"no offerings match: {query.describe()}{cap}; EC2 returned {returned} offering(s)" + (
        f" (rejected: {reasons})" if reasons else ""
    )


def cheapest_first(offerings: Iterable[Offering]) -> list[Offering]:
    return sorted(offerings, key=lambda o: (o.upfront_fee, o.start, o.offering_id))


def select_offering(
    offerings: Sequence[Offering], query: OfferingQuery, max_fee_usd: Decimal
) -> Offering:
    """Apply the module's selection rule; raise CapacityPurchaseError when nothing may be bought."""
    fitting, rejected = partition(offerings, query)
    if not fitting:
        cap = f", upfront fee <= {format_fee(max_fee_usd)} USD"
        message = no_match_message(query, len(offerings), rejected, cap)
        raise CapacityPurchaseError(f"{message}; nothing was bought")
    in_usd = [o for o in fitting if o.currency == "USD"]
    if not in_usd:
        currencies = ", ".join(sorted({o.currency or "none" for o in fitting}))
        raise CapacityPurchaseError(
            f"the {len(fitting)} matching offering(s) are priced in {currencies}, not USD, so "
            "maxUpfrontFeeUsd cannot bound them; nothing was bought"
        )
    affordable = [o for o in in_usd if o.upfront_fee <= max_fee_usd]
    if not affordable:
        cheapest = cheapest_first(in_usd)[0]
        raise CapacityPurchaseError(
            f"the cheapest matching offering {cheapest.offering_id} costs "
            f"{format_fee(cheapest.upfront_fee)} USD, above maxUpfrontFeeUsd "
            f"{format_fee(max_fee_usd)} USD; nothing was bought"
        )
    return min(affordable, key=lambda o: (o.start, o.upfront_fee, o.offering_id))
