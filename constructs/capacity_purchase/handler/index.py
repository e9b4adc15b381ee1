"""Custom resource handler (CDK Provider framework) that finds, and only on confirmation buys, one
EC2 Capacity Block for ML.

PurchaseCapacityBlock spends real money, cannot be cancelled or refunded and has no idempotency
token: a repeated call buys a second block. Everything here is arranged so that it is called at
most once per stack name and logical id.

Offering selection rule
-----------------------
An offering is a candidate only if ALL of these hold:
  * instance request: its instance type and count equal InstanceType and InstanceCount;
    UltraServer request: its UltraServer type and count equal UltraserverType and
    UltraserverCount, and its instance type and count, where the offering reports them, equal
    InstanceType and InstanceCount;
  * its duration equals CapacityDurationHours exactly (EC2 also offers slightly shorter or longer
    neighbours; those are never bought);
  * its start lies within [EarliestStart, LatestStart];
  * its Availability Zone equals AvailabilityZone, if one is set;
  * it is one segment (one reservation in one AZ, which is what the cluster launches into);
  * its currency is USD and its upfront fee is at most MaxUpfrontFeeUsd.
Among the candidates the earliest start wins, then the lowest fee, then the lowest offering id.
With no candidate the deployment fails with a message naming every constraint; when offerings fit
but even the cheapest is above the cap, the message names that fee and the cap. Nothing is bought.

Safety rules
------------
* Dry run unless ConfirmPurchase is "true": the chosen offering is reported, nothing is bought.
* Every purchase is tagged on create with the stack name, stack id and logical id. Before any
  purchase attempt the handler looks for a capacity reservation carrying this stack NAME and
  logical id in a non-terminal state and adopts it instead of buying. The name, unlike the stack
  id, survives re-creating a stack whose first deployment failed.
* The purchase client never lets botocore retry. Only throttling (the request was rejected, not
  executed) is retried here, with backoff and a fresh adoption check before each new attempt. Any
  other failure fails closed: the outcome is reported as unknown, with the tags to look for.
* Update of a held block: purchase settings the block does not satisfy are refused (a block
  cannot be exchanged). Settings it still satisfies are accepted and change nothing; this is what
  lets CloudFormation roll a refused update back, since the rollback is an Update carrying the
  settings the block was bought with. Tags and ConfirmPurchase may change freely. A dry run holds
  nothing, so its settings may change; ConfirmPurchase false -> true on a dry run buys.
* EC2's listings are eventually consistent, so a retry moments after a purchase might not find
  the new block by its tags. The function therefore also remembers, in its execution
  environment's /tmp for an hour, each purchase it sends: before sending (outcome unknown) and
  after (the reservation id). A retry that lands in the same environment adopts the remembered
  reservation by id, or, when the outcome is unknown, refuses to buy instead of buying again.
* Delete buys nothing and cancels nothing (a Capacity Block cannot be cancelled).
* is_complete waits while a block bought or adopted by on_event is payment-pending.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

LOG = logging.getLogger(__name__)
LOG.setLevel(logging.INFO)

TAG_PREFIX = "trn-kit:"
STACK_NAME_TAG = "trn-kit:stack-name"
STACK_ID_TAG = "trn-kit:stack-id"
LOGICAL_ID_TAG = "trn-kit:logical-id"
OFFERING_ID_TAG = "trn-kit:offering-id"
UPFRONT_FEE_TAG = "trn-kit:upfront-fee-usd"
KIT_TAG_COUNT = 5
MAX_TAGS_PER_RESOURCE = 50

MODE_DRY_RUN = "dry-run"
MODE_PURCHASED = "purchased"
MODE_ADOPTED = "adopted"
DRY_RUN_PREFIX = "dry-run-"
# Custom on_event field the Provider framework hands on to is_complete: set only when this
# invocation bought or adopted a block, the only case with a payment to wait for.
AWAIT_PAYMENT = "AwaitPayment"

# A reservation in one of these states holds no capacity and is never adopted.
TERMINAL_STATES = frozenset({"cancelled", "expired", "failed", "payment-failed"})
READY_STATES = frozenset({"scheduled", "active"})
PAYMENT_PENDING_STATES = frozenset({"payment-pending", "pending", "assessing", "delayed"})
THROTTLING_CODES = frozenset({"RequestLimitExceeded", "Throttling"})

# Documented limits of DescribeCapacityBlockOfferings.
MAX_INSTANCES_PER_BLOCK = 64
MAX_DAILY_DURATION_HOURS = 14 * 24
MAX_DURATION_HOURS = 182 * 24
MAX_START_AHEAD = timedelta(weeks=8)

PURCHASE_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 20.0

# Where sent purchases are remembered (a warm Lambda keeps /tmp between invocations) and for how
# long: well beyond the few seconds EC2's describe calls take to list a new block.
MARKER_DIR = Path(tempfile.gettempdir())
MARKER_TTL = timedelta(hours=1)
# Properties that do not define what is bought; every other property does.
NON_PURCHASE_PROPERTIES = frozenset({"Tags", "ConfirmPurchase", "ServiceToken"})


class CapacityPurchaseError(Exception):
    """A failure whose message CloudFormation shows as the resource's failure reason."""


# --- seams the tests replace ----------------------------------------------------------------


def ec2_client(purpose: str, region: str | None = None):
    """An EC2 client for ``purpose``: "purchase" (never retried by botocore) or "describe"."""
    if purpose == "purchase":
        # botocore would retry a 5xx or a timeout, and a retried purchase buys a second block.
        # total_max_attempts counts the first send; botocore's "max_attempts" counts retries
        # only, so max_attempts=1 would still send twice. Explicit Config beats AWS_MAX_ATTEMPTS.
        config = Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=60)
    else:
        config = Config(retries={"mode": "standard", "total_max_attempts": 5})
    return boto3.client("ec2", region_name=region, config=config)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- parsing the resource properties (CloudFormation delivers strings) ----------------------


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


# --- offerings ------------------------------------------------------------------------------


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

    def rejection(self, offering: Offering) -> str | None:
        """Why ``offering`` does not fit (a short reason, counted in messages), or None."""
        if self.ultraserver_type:
            wanted = (self.ultraserver_type, self.ultraserver_count)
            if (offering.ultraserver_type, offering.ultraserver_count) != wanted:
                return "other UltraServer type or count"
            # UltraServer offerings may leave the instance fields out; present ones must agree.
            if offering.instance_type and offering.instance_type != self.instance_type:
                return "other instance type"
            if offering.instance_count and offering.instance_count != self.instance_count:
                return "other instance count"
        elif offering.instance_type != self.instance_type:
            return "other instance type"
        elif offering.instance_count != self.instance_count:
            return "other instance count"
        if offering.duration_hours != self.duration_hours:
            return "other duration"
        if not self.earliest_start <= offering.start <= self.latest_start:
            return "start outside the window"
        if self.availability_zone and offering.availability_zone != self.availability_zone:
            return "other AZ"
        if offering.segments > 1:
            return "split into several segments"
        return None

    def fill(self, offering: Offering) -> Offering:
        """A fitting offering with the instance fields an UltraServer offering left out taken
        from the query (rejection() has checked that the fields it does report agree)."""
        return replace(
            offering,
            instance_type=offering.instance_type or self.instance_type,
            instance_count=offering.instance_count or self.instance_count,
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
        reason = query.rejection(offering)
        if reason is None:
            fitting.append(query.fill(offering))
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


# --- the custom resource's request and identity ---------------------------------------------


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

    def purchase_tags(self, request: PurchaseRequest, offering: Offering) -> list[dict[str, str]]:
        kit = (
            (STACK_NAME_TAG, self.stack_name),
            (STACK_ID_TAG, self.stack_id),
            (LOGICAL_ID_TAG, self.logical_id),
            # Recorded so that a later update or adoption can report what was paid.
            (OFFERING_ID_TAG, offering.offering_id),
            (UPFRONT_FEE_TAG, format_fee(offering.upfront_fee)),
        )
        return [{"Key": key, "Value": value} for key, value in kit + request.tags]


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
            age = utcnow() - sent_at
        except (OSError, ValueError, KeyError, TypeError):  # absent, or not what _write writes
            return None
        return record if age < MARKER_TTL else None

    def sending(self, offering: Offering) -> None:
        """Before the purchase call; if this cannot be written, nothing is bought."""
        self._write({"OfferingId": offering.offering_id, "SentAt": utcnow().isoformat()})

    def bought(self, reservation_id: str) -> None:
        """After a purchase: best effort, so a full /tmp never hides a block that was bought."""
        record = self.recall() or {"SentAt": utcnow().isoformat()}
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


def dry_run_physical_id(props: Mapping[str, Any]) -> str:
    """Deterministic in the purchase-defining properties: tags or confirmation leave it alone."""
    defining = {key: value for key, value in props.items() if key not in NON_PURCHASE_PROPERTIES}
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode())
    return DRY_RUN_PREFIX + digest.hexdigest()[:16]


def changed_purchase_properties(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = (set(old) | set(new)) - NON_PURCHASE_PROPERTIES
    return sorted(key for key in keys if str(old.get(key) or "") != str(new.get(key) or ""))


# --- reservations (bought blocks) -----------------------------------------------------------


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


# --- results --------------------------------------------------------------------------------


def _block_text(block: Offering | Reservation) -> str:
    return (
        f"{block.instance_count} x {block.instance_type} in {block.availability_zone} "
        f"{format_time(block.start)}..{format_time(block.end)}"
    )


def _fee_text(block: Offering | Reservation) -> str:
    if block.upfront_fee is None:
        return "an unrecorded fee"
    return f"{format_fee(block.upfront_fee)} USD"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _result(
    mode: str,
    physical_id: str,
    block: Offering | Reservation,
    reservation_id: str,
    summary: str,
    await_payment: bool = False,
) -> dict[str, Any]:
    LOG.info("%s", summary)
    known_fee = block.upfront_fee is not None
    result: dict[str, Any] = {
        "PhysicalResourceId": physical_id,
        "Data": {
            "CapacityReservationId": reservation_id,
            "AvailabilityZone": block.availability_zone,
            "InstanceType": block.instance_type,
            "InstanceCount": str(block.instance_count),
            "StartDate": _iso(block.start),
            "EndDate": _iso(block.end),
            "UpfrontFee": format_fee(block.upfront_fee) if known_fee else "",
            "CurrencyCode": "USD" if known_fee else "",
            "OfferingId": block.offering_id,
            "Mode": mode,
            "Summary": summary,
        },
    }
    if await_payment:
        result[AWAIT_PAYMENT] = "true"
    return result


def _held(reservation: Reservation, summary: str, await_payment: bool) -> dict[str, Any]:
    """The result for a block this resource holds without buying it now."""
    rid = reservation.reservation_id
    return _result(MODE_ADOPTED, rid, reservation, rid, summary, await_payment)


def _adopt(
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
            f"capacity reservation {reservation.reservation_id} ({_block_text(reservation)}) is "
            f"already tagged for this resource but does not fit the settings "
            f"({', '.join(mismatches)}); refusing to buy a second block. Restore the settings it "
            f"was bought with, or remove its {STACK_NAME_TAG} and {LOGICAL_ID_TAG} tags to buy "
            "a new one (it stays billed until its end either way)"
        )
    text = f"{reservation.reservation_id} ({_block_text(reservation)}, {reservation.state})"
    if not request.confirmed:
        return _result(
            MODE_DRY_RUN,
            physical_id,
            reservation,
            "",
            f"DRY RUN: this stack already holds {text}; with capacityPurchaseConfirm=true it is "
            "adopted and nothing is bought",
        )
    return _held(
        reservation,
        f"ADOPTED {text} for {_fee_text(reservation)}, bought earlier for this stack; "
        "nothing was bought now",
        await_payment=True,
    )


def _unknown_outcome(offering: Offering, identity: Identity, cause: str) -> CapacityPurchaseError:
    return CapacityPurchaseError(
        f"PurchaseCapacityBlock for offering {offering.offering_id} "
        f"({format_fee(offering.upfront_fee)} USD) failed: {cause}. The outcome is UNKNOWN and "
        f"the call is not retried: a block may have been bought. {identity.lookup_hint()}. The "
        "next deployment adopts a block carrying these tags instead of buying another"
    )


def _bought_reservation_id(response: Mapping[str, Any]) -> str:
    single = response.get("CapacityReservation")
    reservations = [single] if single else list(response.get("CapacityReservations") or ())
    ids = [r["CapacityReservationId"] for r in reservations]
    if len(ids) != 1:
        raise CapacityPurchaseError(
            f"PurchaseCapacityBlock succeeded but returned {len(ids)} capacity reservations "
            f"({', '.join(ids) or 'none'}); the block is bought and billed. Deploy again to "
            "adopt it by its tags"
        )
    return ids[0]


def _purchase(
    request: PurchaseRequest, identity: Identity, offering: Offering, describe, physical_id: str
) -> dict[str, Any]:
    purchase_client = ec2_client("purchase")
    tags = identity.purchase_tags(request, offering)
    memory = PurchaseMemory.of(identity)
    try:
        memory.sending(offering)
    except OSError as error:
        raise CapacityPurchaseError(
            f"could not record the purchase of {offering.offering_id} before sending it "
            f"({error}); nothing was bought"
        ) from error
    attempt = 1
    while True:
        LOG.info(
            "PURCHASING %s (%s) for %s, attempt %d",
            offering.offering_id,
            _block_text(offering),
            _fee_text(offering),
            attempt,
        )
        try:
            response = purchase_client.purchase_capacity_block(
                CapacityBlockOfferingId=offering.offering_id,
                InstancePlatform=request.instance_platform,
                TagSpecifications=[{"ResourceType": "capacity-reservation", "Tags": tags}],
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code not in THROTTLING_CODES:
                raise _unknown_outcome(offering, identity, f"{code}: {error}") from error
            if attempt == PURCHASE_ATTEMPTS:
                memory.forget()
                raise CapacityPurchaseError(
                    f"EC2 throttled all {PURCHASE_ATTEMPTS} purchase attempts ({code}); a "
                    "throttled request is not executed, so nothing was bought. Deploy again later"
                ) from error
            delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
            LOG.warning(
                "purchase throttled (%s); re-check for a tagged block in %.0fs", code, delay
            )
            sleep(delay)
            candidates = find_adoptable(describe, identity)
            if candidates:
                memory.forget()
                return _adopt(candidates, request, physical_id)
            attempt += 1
        except Exception as error:  # timeouts, dropped connections: the request may have executed
            cause = f"{type(error).__name__}: {error}"
            raise _unknown_outcome(offering, identity, cause) from error
        else:
            reservation_id = _bought_reservation_id(response)
            memory.bought(reservation_id)
            return _result(
                MODE_PURCHASED,
                reservation_id,
                offering,
                reservation_id,
                f"PURCHASED {reservation_id}: {offering.offering_id} {_block_text(offering)} for "
                f"{_fee_text(offering)}; it cannot be cancelled and is billed until "
                f"{format_time(offering.end)}",
                await_payment=True,
            )


def _acquire(
    event: Mapping[str, Any], request: PurchaseRequest, identity: Identity
) -> dict[str, Any]:
    """Adopt this resource's tagged block, else find the offering and, if confirmed, buy it."""
    physical_id = dry_run_physical_id(event["ResourceProperties"])
    describe = ec2_client("describe")
    candidates = find_adoptable(describe, identity)
    if candidates:
        return _adopt(candidates, request, physical_id)
    adopted = _remembered(describe, request, identity, physical_id)
    if adopted:
        return adopted
    query = request.query
    query.check_window(utcnow())
    offering = select_offering(fetch_offerings(describe, query), query, request.max_fee_usd)
    if not request.confirmed:
        return _result(
            MODE_DRY_RUN,
            physical_id,
            offering,
            "",
            f"DRY RUN: would buy {offering.offering_id} {_block_text(offering)} for "
            f"{_fee_text(offering)}; set capacityPurchaseConfirm=true to buy",
        )
    return _purchase(request, identity, offering, describe, physical_id)


def _remembered(
    describe, request: PurchaseRequest, identity: Identity, physical_id: str
) -> dict[str, Any] | None:
    """A purchase this environment sent that EC2's tag search does not list yet: adopt it by id,
    or refuse while its outcome is unknown. None: nothing live is remembered, go on."""
    memory = PurchaseMemory.of(identity)
    record = memory.recall()
    if record is None:
        return None
    reservation_id = record.get("CapacityReservationId")
    if reservation_id:
        reservation = describe_reservation(describe, reservation_id)
        if reservation.state not in TERMINAL_STATES:
            return _adopt([reservation], request, physical_id)
        # Ended (e.g. payment-failed): it holds nothing, so the next block may be bought.
        memory.forget()
        return None
    expires = datetime.fromisoformat(record["SentAt"]) + MARKER_TTL
    raise CapacityPurchaseError(
        f"this function sent PurchaseCapacityBlock for offering {record['OfferingId']} at "
        f"{record['SentAt']} and its outcome is unknown; EC2 does not list a block tagged for "
        "this resource yet, so nothing is bought again. Deploy again in a few minutes: a block "
        f"bought then is adopted; if none was bought, this function buys again from "
        f"{format_time(expires)}. {identity.lookup_hint()}"
    )


def _update(
    event: Mapping[str, Any], request: PurchaseRequest, identity: Identity
) -> dict[str, Any]:
    physical_id = event["PhysicalResourceId"]
    if physical_id.startswith(DRY_RUN_PREFIX):
        # Nothing is held yet, so any setting may change; a confirmation now buys.
        return _acquire(event, request, identity)
    reservation = describe_reservation(ec2_client("describe"), physical_id)
    old = event.get("OldResourceProperties") or {}
    changed = changed_purchase_properties(old, event["ResourceProperties"])
    mismatches = reservation.mismatches(request)
    if changed and mismatches:
        raise CapacityPurchaseError(
            f"refusing to change {', '.join(changed)}: this resource holds capacity block "
            f"{physical_id} ({_block_text(reservation)}), which does not fit the new settings "
            f"({', '.join(mismatches)}). A Capacity Block cannot be exchanged, modified or "
            "cancelled. Restore the previous settings; to buy another block, add a new "
            "capacity purchase (a new construct id) instead"
        )
    note = f"; changed {', '.join(changed)} still satisfied" if changed else ""
    return _held(
        reservation,
        f"KEEPS {physical_id}: {_block_text(reservation)} for {_fee_text(reservation)}, "
        f"{reservation.state}{note}; tags are set at purchase and not rewritten; "
        "nothing was bought",
        await_payment=False,
    )


def _delete(event: Mapping[str, Any]) -> dict[str, Any]:
    physical_id = event["PhysicalResourceId"]
    if physical_id.startswith(DRY_RUN_PREFIX):
        LOG.info("dry run %s deleted: nothing was bought", physical_id)
    else:
        LOG.warning(
            "capacity block %s is NOT cancelled (Capacity Blocks cannot be cancelled): it "
            "remains, and is billed, until its end date",
            physical_id,
        )
    return {"PhysicalResourceId": physical_id}


def on_event(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    request_type = event["RequestType"]
    LOG.info(
        "%s %s (physical id %s)",
        request_type,
        event.get("LogicalResourceId"),
        event.get("PhysicalResourceId"),
    )
    if request_type == "Delete":
        return _delete(event)
    request = PurchaseRequest.from_properties(event["ResourceProperties"])
    identity = Identity.from_event(event)
    if request_type == "Update":
        return _update(event, request, identity)
    return _acquire(event, request, identity)


def is_complete(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Wait for a block bought or adopted by on_event to leave payment-pending; all else is done."""
    if event["RequestType"] == "Delete" or event.get(AWAIT_PAYMENT) != "true":
        return {"IsComplete": True}
    reservation_id = event["PhysicalResourceId"]
    state = describe_reservation(ec2_client("describe"), reservation_id).state
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
