"""Parsing the custom resource's properties (CloudFormation delivers strings) and the limits of
what EC2 sells, which config.py checks at synth time too."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

TAG_PREFIX = "trn-kit:"
STACK_NAME_TAG = "trn-kit:stack-name"
STACK_ID_TAG = "trn-kit:stack-id"
LOGICAL_ID_TAG = "trn-kit:logical-id"
OFFERING_ID_TAG = "trn-kit:offering-id"
UPFRONT_FEE_TAG = "trn-kit:upfront-fee-usd"
KIT_TAG_COUNT = 5
MAX_TAGS_PER_RESOURCE = 50

DRY_RUN_PREFIX = "dry-run-"
# Properties that do not define what is bought; every other property does.
NON_PURCHASE_PROPERTIES = frozenset({"Tags", "ConfirmPurchase", "ServiceToken"})

# Documented limits of DescribeCapacityBlockOfferings.
MAX_INSTANCES_PER_BLOCK = 64
MAX_DAILY_DURATION_HOURS = 14 * 24
MAX_DURATION_HOURS = 182 * 24
MAX_START_AHEAD = timedelta(weeks=8)


class CapacityPurchaseError(Exception):
    """A failure whose message CloudFormation shows as the resource's failure reason."""


def _required(props: Mapping[str, Any], key: str) -> str:
    value = str(props.get(key) or "").strip()
    if not value:
        raise CapacityPurchaseError(f"capacity purchase property {key} is required")
    return value


def _integer(props: Mapping[str, Any], key: str) -> int:
    raw = _required(props, key)
    try:
        return int(raw)
    except ValueError:
        raise CapacityPurchaseError(f"{key} must be a whole number, got {raw!r}") from None


def _timestamp(props: Mapping[str, Any], key: str) -> datetime:
    raw = _required(props, key)
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise CapacityPurchaseError(
            f"{key} must be an ISO-8601 UTC time such as 2026-12-01T11:30:00Z, got {raw!r}"
        ) from None
    # The contract is UTC, so a time without an offset is read as UTC.
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _decimal(props: Mapping[str, Any], key: str) -> Decimal:
    raw = _required(props, key)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise CapacityPurchaseError(f"{key} must be an amount of US dollars, got {raw!r}") from None
    if not value.is_finite() or value <= 0:
        raise CapacityPurchaseError(f"{key} must be a positive amount of US dollars, got {raw!r}")
    return value


def _confirmation(props: Mapping[str, Any]) -> bool:
    raw = str(props.get("ConfirmPurchase") or "false").strip()
    if raw not in ("true", "false"):
        raise CapacityPurchaseError(f'ConfirmPurchase must be "true" or "false", got {raw!r}')
    return raw == "true"


def _user_tags(props: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    # Checked here because EC2 rejecting a tag would surface as a purchase of unknown outcome.
    tags = tuple((str(tag["Key"]), str(tag["Value"])) for tag in props.get("Tags") or ())
    for key, value in tags:
        if key.lower().startswith(("aws:", TAG_PREFIX)):
            raise CapacityPurchaseError(
                f"tag key {key!r} is reserved (prefixes aws: and {TAG_PREFIX})"
            )
        if not 1 <= len(key) <= 128 or len(value) > 256:
            raise CapacityPurchaseError(f"tag {key!r}: keys take 1-128 characters, values 0-256")
    if len(tags) + KIT_TAG_COUNT > MAX_TAGS_PER_RESOURCE:
        raise CapacityPurchaseError(
            f"at most {MAX_TAGS_PER_RESOURCE - KIT_TAG_COUNT} tags fit beside the kit's own"
        )
    return tags


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def format_fee(fee: Decimal) -> str:
    return f"{fee:.2f}"


def valid_duration_hours(hours: int) -> bool:
    """1-14 days in whole days, then 7-day steps up to 182 days."""
    if hours <= 0 or hours % 24:
        return False
    if hours <= MAX_DAILY_DURATION_HOURS:
        return True
    return hours % (7 * 24) == 0 and hours <= MAX_DURATION_HOURS


@dataclass(frozen=True)
class OfferingQuery:
    """What to search for; shared by the custom resource and the offering search command."""

    instance_type: str
    instance_count: int
    duration_hours: int
    earliest_start: datetime
    latest_start: datetime
    availability_zone: str | None = None
    ultraserver_type: str | None = None
    ultraserver_count: int | None = None

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> "OfferingQuery":
        ultraserver_type = str(props.get("UltraserverType") or "").strip() or None
        if not ultraserver_type and str(props.get("UltraserverCount") or "").strip():
            raise CapacityPurchaseError("UltraserverCount is set but UltraserverType is not")
        query = cls(
            instance_type=_required(props, "InstanceType"),
            instance_count=_integer(props, "InstanceCount"),
            duration_hours=_integer(props, "CapacityDurationHours"),
            earliest_start=_timestamp(props, "EarliestStart"),
            latest_start=_timestamp(props, "LatestStart"),
            availability_zone=str(props.get("AvailabilityZone") or "").strip() or None,
            ultraserver_type=ultraserver_type,
            ultraserver_count=_integer(props, "UltraserverCount") if ultraserver_type else None,
        )
        query.check_shape()
        return query

    def check_shape(self) -> None:
        """Reject what EC2 can never offer, before any API call."""
        if not 1 <= self.instance_count <= MAX_INSTANCES_PER_BLOCK:
            raise CapacityPurchaseError(
                f"InstanceCount {self.instance_count} is outside 1-{MAX_INSTANCES_PER_BLOCK} "
                "(the per-block limit; 256 instances across all blocks)"
            )
        if self.ultraserver_count is not None and self.ultraserver_count < 1:
            raise CapacityPurchaseError(
                f"UltraserverCount must be at least 1, got {self.ultraserver_count}"
            )
        if not valid_duration_hours(self.duration_hours):
            raise CapacityPurchaseError(
                f"CapacityDurationHours {self.duration_hours} is not a Capacity Block duration: "
                "use 1-14 days in whole days (24-336 h) or 7-day steps up to 182 days (4368 h)"
            )
        if self.latest_start < self.earliest_start:
            raise CapacityPurchaseError(
                f"LatestStart {format_time(self.latest_start)} is before "
                f"EarliestStart {format_time(self.earliest_start)}"
            )

    def check_window(self, now: datetime) -> None:
        """Reject a start window EC2 cannot serve now (blocks start at most 8 weeks ahead)."""
        horizon = now + MAX_START_AHEAD
        bounds = (("EarliestStart", self.earliest_start), ("LatestStart", self.latest_start))
        for label, moment in bounds:
            if moment > horizon:
                raise CapacityPurchaseError(
                    f"{label} {format_time(moment)} is more than 8 weeks ahead "
                    f"(latest possible start now: {format_time(horizon)})"
                )
        if self.latest_start < now:
            raise CapacityPurchaseError(
                f"the start window ended at {format_time(self.latest_start)}"
            )

    def api_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "CapacityDurationHours": self.duration_hours,
            "StartDateRange": self.earliest_start,
            "EndDateRange": self.latest_start + timedelta(hours=self.duration_hours),
        }
        if self.ultraserver_type:
            params["UltraserverType"] = self.ultraserver_type
            params["UltraserverCount"] = self.ultraserver_count
        else:
            params["InstanceType"] = self.instance_type
            params["InstanceCount"] = self.instance_count
        return params

    def describe(self) -> str:
        size = f"{self.instance_count} x {self.instance_type}"
        if self.ultraserver_type:
            size = f"{self.ultraserver_count} x {self.ultraserver_type} UltraServer ({size})"
        return (
            f"{size}, {self.duration_hours} h, start between {format_time(self.earliest_start)} "
            f"and {format_time(self.latest_start)}, AZ {self.availability_zone or 'any'}"
        )


@dataclass(frozen=True)
class PurchaseRequest:
    query: OfferingQuery
    max_fee_usd: Decimal
    confirmed: bool
    instance_platform: str
    tags: tuple[tuple[str, str], ...]

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> "PurchaseRequest":
        return cls(
            query=OfferingQuery.from_properties(props),
            max_fee_usd=_decimal(props, "MaxUpfrontFeeUsd"),
            confirmed=_confirmation(props),
            instance_platform=str(props.get("InstancePlatform") or "").strip() or "Linux/UNIX",
            tags=_user_tags(props),
        )


@dataclass(frozen=True)
class Identity:
    """What ties a block to one custom resource: the values of its idempotency tags."""

    stack_name: str
    stack_id: str
    logical_id: str

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> "Identity":
        return cls(
            stack_name=_required(event["ResourceProperties"], "StackName"),
            stack_id=event["StackId"],
            logical_id=event["LogicalResourceId"],
        )

    def lookup_hint(self) -> str:
        return (
            f"Look for capacity reservations tagged {STACK_NAME_TAG}={self.stack_name} and "
            f"{LOGICAL_ID_TAG}={self.logical_id} (aws ec2 describe-capacity-reservations "
            f"--filters Name=tag:{STACK_NAME_TAG},Values={self.stack_name} "
            f"Name=tag:{LOGICAL_ID_TAG},Values={self.logical_id})"
        )


def dry_run_physical_id(props: Mapping[str, Any]) -> str:
    """Deterministic in the purchase-defining properties: tags or confirmation leave it alone."""
    defining = {key: value for key, value in props.items() if key not in NON_PURCHASE_PROPERTIES}
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode())
    return DRY_RUN_PREFIX + digest.hexdigest()[:16]


def changed_purchase_properties(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = (set(old) | set(new)) - NON_PURCHASE_PROPERTIES
    return sorted(key for key in keys if str(old.get(key) or "") != str(new.get(key) or ""))
