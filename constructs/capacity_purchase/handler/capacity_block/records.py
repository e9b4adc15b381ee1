"""The durable record of a purchase this resource intends, in the construct's DynamoDB table.

PurchaseCapacityBlock has no idempotency token and EC2 lists a new block only after a while, so
the record is written before the call and read first by every attempt, in any Lambda
environment. One item per stack id and logical id. Only one attempt can create it (a conditional
put); every later change is an update conditional on the version and state that were read.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from . import aws
from .offerings import Offering
from .request import CapacityPurchaseError, Identity, format_fee

LOG = logging.getLogger(__name__)

# The table's partition and sort key; the construct declares the same.
STACK_ID_KEY = "StackId"
LOGICAL_ID_KEY = "LogicalId"

SENDING = "sending"  # before the call, and after it while its outcome is unknown
BOUGHT = "bought"
NOT_BOUGHT = "not-bought"  # EC2 executed none of the attempts: released

_SERIALIZE = TypeSerializer().serialize
_DESERIALIZE = TypeDeserializer().deserialize


@dataclass(frozen=True)
class Intent:
    state: str
    offering_id: str
    sent_at: datetime
    # The offering's end: whatever it bought holds nothing after it.
    ends_at: datetime
    version: int
    # Unique to the attempt that wrote the record, so that attempt knows its own write again.
    claim: str
    reservation_id: str = ""

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> "Intent":
        plain = {name: _DESERIALIZE(value) for name, value in item.items()}
        return cls(
            state=plain["State"],
            offering_id=plain["OfferingId"],
            sent_at=datetime.fromisoformat(plain["SentAt"]),
            ends_at=datetime.fromisoformat(plain["EndsAt"]),
            version=int(plain["Version"]),
            claim=plain["Claim"],
            reservation_id=plain.get("ReservationId", ""),
        )


def _key(identity: Identity) -> dict[str, Any]:
    return {
        STACK_ID_KEY: {"S": identity.stack_id},
        LOGICAL_ID_KEY: {"S": identity.logical_id},
    }


def read(identity: Identity) -> Intent | None:
    response = aws.records_client().get_item(
        TableName=aws.records_table(), Key=_key(identity), ConsistentRead=True
    )
    item = response.get("Item")
    return Intent.from_item(item) if item else None


def claim(identity: Identity, offering: Offering, previous: Intent | None) -> Intent:
    """Record the intent to buy ``offering``: created if ``previous`` is None, else written over
    it (a record that holds no block). Raises, having bought nothing, if another attempt changed
    the record first or it cannot be written."""
    intent = Intent(
        state=SENDING,
        offering_id=offering.offering_id,
        sent_at=aws.utcnow(),
        ends_at=offering.end,
        version=previous.version + 1 if previous else 1,
        claim=uuid.uuid4().hex,
    )
    fields = {
        "State": intent.state,
        "OfferingId": intent.offering_id,
        "UpfrontFeeUsd": format_fee(offering.upfront_fee),
        "StackName": identity.stack_name,
        "SentAt": intent.sent_at.isoformat(),
        "EndsAt": intent.ends_at.isoformat(),
        "Version": intent.version,
        "Claim": intent.claim,
    }
    try:
        if previous is None:
            _create(identity, fields)
        else:
            _update(identity, previous, fields, remove=("ReservationId", "Reason"))
    except ClientError as error:
        if not _rejected_condition(error):
            raise _unrecorded(offering, error) from error
        found = error.response.get("Item")
        other = Intent.from_item(found) if found else None
        now = f"{other.state} for offering {other.offering_id}" if other else "deleted"
        raise CapacityPurchaseError(
            "the purchase record of this resource changed while this attempt was about to buy "
            f"(it is now {now}); nothing was bought by this attempt. "
            "Deploy again: the next attempt reads the record first"
        ) from error
    except BotoCoreError as error:
        raise _unrecorded(offering, error) from error
    return intent


def mark_bought(identity: Identity, intent: Intent, reservation_id: str) -> None:
    """After a purchase, best effort: a record still in "sending" only makes later attempts wait
    for the block by its tags, and the block bought must be reported either way."""
    try:
        _advance(identity, intent, BOUGHT, ReservationId=reservation_id)
    except (ClientError, BotoCoreError) as error:
        LOG.warning(
            "could not record that %s was bought (the record stays %s): %s",
            reservation_id,
            intent.state,
            error,
        )


def release(identity: Identity, intent: Intent, reason: str) -> None:
    """Mark a record whose every attempt EC2 rejected unexecuted: the next attempt may buy."""
    try:
        _advance(identity, intent, NOT_BOUGHT, Reason=reason)
    except (ClientError, BotoCoreError) as error:
        raise CapacityPurchaseError(
            f"nothing was bought ({reason}), but the purchase record could not be released "
            f"({error}); later attempts wait for a block that does not exist until it is "
            f"deleted: {deletion_command(identity)}"
        ) from error


def deletion_command(identity: Identity) -> str:
    """The command that deletes this resource's record by hand (which lets the next attempt buy)."""
    key = json.dumps(_key(identity), separators=(",", ":"))
    return f"aws dynamodb delete-item --table-name {aws.records_table()} --key '{key}'"


def _create(identity: Identity, fields: Mapping[str, Any]) -> None:
    """Put the record if there is none; a resent put of ours that already landed counts as done."""
    try:
        aws.records_client().put_item(
            TableName=aws.records_table(),
            Item=_key(identity) | {name: _SERIALIZE(value) for name, value in fields.items()},
            ConditionExpression=f"attribute_not_exists(#{STACK_ID_KEY})",
            ExpressionAttributeNames={f"#{STACK_ID_KEY}": STACK_ID_KEY},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as error:
        if not _landed(error, fields):
            raise


def _advance(identity: Identity, intent: Intent, state: str, **fields: str) -> None:
    _update(identity, intent, {"State": state, **fields, "Version": intent.version + 1})


def _update(
    identity: Identity, seen: Intent, fields: Mapping[str, Any], remove: tuple[str, ...] = ()
) -> None:
    """Set ``fields`` and remove ``remove`` if the record is still at the version and state seen;
    a resent write of ours that already landed counts as done."""
    names = {f"#{name}": name for name in [*fields, *remove, "State", "Version"]}
    values = {f":{name}": _SERIALIZE(value) for name, value in fields.items()}
    values |= {":seen_version": _SERIALIZE(seen.version), ":seen_state": _SERIALIZE(seen.state)}
    expression = "SET " + ", ".join(f"#{name} = :{name}" for name in fields)
    if remove:
        expression += " REMOVE " + ", ".join(f"#{name}" for name in remove)
    try:
        aws.records_client().update_item(
            TableName=aws.records_table(),
            Key=_key(identity),
            UpdateExpression=expression,
            ConditionExpression="#Version = :seen_version AND #State = :seen_state",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as error:
        if not _landed(error, fields):
            raise


def _landed(error: ClientError, fields: Mapping[str, Any]) -> bool:
    """Whether a rejected conditional write failed only because botocore resent it after it had
    landed: the record already holds exactly ``fields`` (a claim id is unique to one attempt)."""
    found = error.response.get("Item")
    if not _rejected_condition(error) or found is None:
        return False
    return all(name in found and _DESERIALIZE(found[name]) == v for name, v in fields.items())


def _rejected_condition(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _unrecorded(offering: Offering, error: Exception) -> CapacityPurchaseError:
    return CapacityPurchaseError(
        f"could not record the intent to buy {offering.offering_id} before sending the purchase "
        f"({error}); nothing was bought"
    )
