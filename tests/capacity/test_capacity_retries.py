"""Throttling, server errors and timeouts: at most one purchase, never an unexamined retry."""

from __future__ import annotations

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.retries.standard import ThrottledRetryableChecker
from capacity_fakes import event, offering, properties, reservation
from lambda_env import load

from trn_constructs.capacity_purchase.handler.capacity_block.purchase import PURCHASE_ATTEMPTS

CONFIRMED = event("Create", properties(ConfirmPurchase="true"))


def test_purchase_throttling_backs_off_rechecks_and_buys_once(handler, ec2, outside):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_fails("RequestLimitExceeded", 503)
    ec2.adoption_check()  # re-checked before the second attempt
    ec2.purchase_fails("Throttling", 400)
    ec2.adoption_check()
    ec2.purchase_succeeds(reservation())
    result = handler.on_event(CONFIRMED)
    assert result["Data"]["Mode"] == "purchased"
    assert len(ec2.purchase_calls) == 3  # two rejected unexecuted, one executed
    assert outside.clock.slept == [2.0, 4.0]


# botocore's own list, whatever its version: every code it retries as throttling.
@pytest.mark.parametrize("code", ThrottledRetryableChecker._THROTTLED_ERROR_CODES)
def test_every_code_botocore_counts_as_throttling_is_retried_after_a_fresh_check(
    handler, ec2, outside, code
):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_fails(code, 400)
    ec2.adoption_check()
    ec2.purchase_succeeds(reservation())
    assert handler.on_event(CONFIRMED)["Data"]["Mode"] == "purchased"
    assert len(ec2.purchase_calls) == 2
    assert outside.clock.slept == [2.0]


def test_block_found_after_a_throttled_attempt_is_adopted_not_bought(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_fails("RequestLimitExceeded", 503)
    ec2.adoption_check(reservation())  # e.g. bought by a concurrent invocation
    result = handler.on_event(CONFIRMED)
    assert result["Data"]["Mode"] == "adopted"
    assert len(ec2.purchase_calls) == 1


def test_throttled_on_every_attempt_fails_saying_nothing_was_bought(handler, ec2, outside):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_throttled_throughout()
    with pytest.raises(
        handler.Error, match="throttled all 5 purchase attempts.*nothing was bought"
    ):
        handler.on_event(CONFIRMED)
    assert len(ec2.purchase_calls) == PURCHASE_ATTEMPTS
    assert outside.clock.slept == [2.0, 4.0, 8.0, 16.0]


@pytest.mark.parametrize(
    ("code", "status"), [("InternalError", 500), ("InsufficientInstanceCapacity", 400)]
)
def test_other_purchase_errors_fail_closed_after_one_attempt(handler, ec2, outside, code, status):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_fails(code, status)
    with pytest.raises(handler.Error) as failure:
        handler.on_event(CONFIRMED)
    message = str(failure.value)
    assert (
        f"failed: {code}" in message and "outcome is UNKNOWN and the call is not retried" in message
    )
    assert (
        "trn-kit:stack-name=TrnCluster and trn-kit:logical-id=CapacityPurchase1A2B3C4D" in message
    )
    assert "the next deployment waits for a block carrying these tags and adopts it" in message
    assert len(ec2.purchase_calls) == 1
    assert outside.clock.slept == []


# --- the real clients' botocore retry configuration, seen on the wire ---------------------------


def test_purchase_client_never_retries_and_describe_client_does(tmp_path):
    clients = load(tmp_path).module("aws")
    assert clients.ec2_client("purchase").meta.config.retries == {
        "mode": "standard",
        "total_max_attempts": 1,
    }
    assert clients.ec2_client("describe").meta.config.retries == {
        "mode": "standard",
        "total_max_attempts": 5,
    }


def _describes_succeed_after_throttling(wire) -> None:
    wire.answer(
        "DescribeCapacityReservations",
        wire.error("RequestLimitExceeded", 503),
        wire.ok("DescribeCapacityReservations", {"CapacityReservations": []}),
    )
    wire.answer(
        "DescribeCapacityBlockOfferings",
        wire.error("RequestLimitExceeded", 503),
        wire.ok("DescribeCapacityBlockOfferings", {"CapacityBlockOfferings": [offering()]}),
    )


def test_describe_throttling_is_retried_by_botocore_and_the_block_bought_once(handler, wire):
    _describes_succeed_after_throttling(wire)
    wire.answer(
        "PurchaseCapacityBlock",
        wire.ok("PurchaseCapacityBlock", {"CapacityReservation": reservation()}),
    )
    result = handler.on_event(CONFIRMED)
    assert result["PhysicalResourceId"] == "cr-0bbb"
    assert wire.sends == [
        "DescribeCapacityReservations",
        "DescribeCapacityReservations",
        "DescribeCapacityBlockOfferings",
        "DescribeCapacityBlockOfferings",
        "PurchaseCapacityBlock",
    ]


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(lambda wire: wire.error("InternalError", 500), id="5xx"),
        pytest.param(lambda wire: wire.error("ServiceUnavailable", 503), id="503"),
        pytest.param(
            lambda wire: ReadTimeoutError(endpoint_url="https://ec2.us-east-2.amazonaws.com/"),
            id="timeout",
        ),
    ],
)
def test_ambiguous_purchase_failure_is_sent_once_and_fails_closed(
    handler, wire, monkeypatch, failure
):
    # Even a configured AWS_MAX_ATTEMPTS must not make botocore resend a purchase.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")
    _describes_succeed_after_throttling(wire)
    wire.answer("PurchaseCapacityBlock", failure(wire))
    with pytest.raises(handler.Error, match="outcome is UNKNOWN"):
        handler.on_event(CONFIRMED)
    assert wire.count("PurchaseCapacityBlock") == 1
