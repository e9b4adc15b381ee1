"""The PurchaseCapacityBlock call: sent once; retried only after throttling (a request EC2
rejected, not executed), with a fresh adoption check before each new attempt."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from botocore.exceptions import ClientError
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker

from . import aws, records
from .adoption import adopt
from .offerings import Offering
from .request import (
    LOGICAL_ID_TAG,
    OFFERING_ID_TAG,
    STACK_ID_TAG,
    STACK_NAME_TAG,
    UPFRONT_FEE_TAG,
    CapacityPurchaseError,
    Identity,
    PurchaseRequest,
    format_fee,
    format_time,
)
from .reservations import find_adoptable
from .results import MODE_PURCHASED, block_text, fee_text, result

LOG = logging.getLogger(__name__)

PURCHASE_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 20.0

_THROTTLING = ThrottledRetryableChecker()


def _throttled(error: ClientError) -> bool:
    """Whether botocore counts ``error`` as throttling, a request rejected and not executed: its
    own list of codes (the Lambda runtime's botocore), not one kept here."""
    return _THROTTLING.is_retryable(RetryContext(attempt_number=1, parsed_response=error.response))


def purchase_tags(
    identity: Identity, request: PurchaseRequest, offering: Offering
) -> list[dict[str, str]]:
    kit = (
        (STACK_NAME_TAG, identity.stack_name),
        (STACK_ID_TAG, identity.stack_id),
        (LOGICAL_ID_TAG, identity.logical_id),
        # Recorded so that a later update or adoption can report what was paid.
        (OFFERING_ID_TAG, offering.offering_id),
        (UPFRONT_FEE_TAG, format_fee(offering.upfront_fee)),
    )
    return [{"Key": key, "Value": value} for key, value in kit + request.tags]


def _unknown_outcome(offering: Offering, identity: Identity, cause: str) -> CapacityPurchaseError:
    return CapacityPurchaseError(
        f"PurchaseCapacityBlock for offering {offering.offering_id} "
        f"({format_fee(offering.upfront_fee)} USD) failed: {cause}. The outcome is UNKNOWN and "
        f"the call is not retried: a block may have been bought. {identity.lookup_hint()}. The "
        "purchase record keeps this intent: the next deployment waits for a block carrying these "
        "tags and adopts it, and buys nothing while EC2 lists none"
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


def buy(
    request: PurchaseRequest,
    identity: Identity,
    offering: Offering,
    previous: records.Intent | None,
    describe,
    physical_id: str,
) -> dict[str, Any]:
    """Record the intent (``previous``: the record read, holding no block), then buy."""
    purchase_client = aws.ec2_client("purchase")
    tags = purchase_tags(identity, request, offering)
    intent = records.claim(identity, offering, previous)
    attempt = 1
    while True:
        LOG.info(
            "PURCHASING %s (%s) for %s, attempt %d",
            offering.offering_id,
            block_text(offering),
            fee_text(offering),
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
            if not _throttled(error):
                raise _unknown_outcome(offering, identity, f"{code}: {error}") from error
            if attempt == PURCHASE_ATTEMPTS:
                reason = f"EC2 throttled all {PURCHASE_ATTEMPTS} purchase attempts ({code})"
                records.release(identity, intent, reason)
                raise CapacityPurchaseError(
                    f"{reason}; a throttled request is not executed, so nothing was bought. "
                    "Deploy again later"
                ) from error
            delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
            LOG.warning(
                "purchase throttled (%s); re-check for a tagged block in %.0fs", code, delay
            )
            aws.sleep(delay)
            candidates = find_adoptable(describe, identity)
            if candidates:
                # e.g. a block bought for an earlier stack of this name, listed only now
                records.release(identity, intent, f"a tagged block was listed after {code}")
                return adopt(candidates, request, physical_id)
            attempt += 1
        except Exception as error:  # timeouts, dropped connections: the request may have executed
            cause = f"{type(error).__name__}: {error}"
            raise _unknown_outcome(offering, identity, cause) from error
        else:
            reservation_id = _bought_reservation_id(response)
            records.mark_bought(identity, intent, reservation_id)
            return result(
                MODE_PURCHASED,
                reservation_id,
                offering,
                reservation_id,
                f"PURCHASED {reservation_id}: {offering.offering_id} {block_text(offering)} for "
                f"{fee_text(offering)}; it cannot be cancelled and is billed until "
                f"{format_time(offering.end)}",
                await_payment=True,
            )
