"""The purchase record: written before the call, read first by every attempt; it never lets an
attempt buy over a purchase that may have happened, and only a purchase EC2 executed on no
attempt (throttled throughout) or a block that has ended releases it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from capacity_fakes import NOW, RECORDS_TABLE, STACK_ID, event, offering, properties, reservation
from fake_dynamodb import LOST

from trn_constructs.capacity_purchase.handler.capacity_block.adoption import LISTING_WAIT
from trn_constructs.capacity_purchase.handler.capacity_block.purchase import PURCHASE_ATTEMPTS
from trn_constructs.capacity_purchase.handler.capacity_block.reservations import LISTING_POLL

CONFIRMED = event("Create", properties(ConfirmPurchase="true"))
POLLS = int(LISTING_WAIT / LISTING_POLL)


def the_record(records) -> dict:
    (item,) = records.items(RECORDS_TABLE)
    return item


def test_the_intent_is_recorded_before_the_call_and_the_block_after(handler, ec2, records):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation(state="payment-pending"))
    handler.on_event(CONFIRMED)
    assert records.sends == ["GetItem", "PutItem", "UpdateItem"]
    record = the_record(records)
    assert {key: record[key] for key in ("StackId", "LogicalId", "State", "ReservationId")} == {
        "StackId": STACK_ID,
        "LogicalId": "CapacityPurchase1A2B3C4D",
        "State": "bought",
        "ReservationId": "cr-0bbb",
    }
    assert (record["OfferingId"], record["UpfrontFeeUsd"], record["Version"]) == (
        "cb-0aaa",
        "20000.00",
        2,
    )
    assert (record["SentAt"], record["EndsAt"]) == (
        NOW.isoformat(),
        "2026-12-09T11:30:00+00:00",
    )
    assert len(ec2.purchase_calls) == 1


def test_a_retry_adopts_the_recorded_block_by_id_before_any_tag_search(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation(state="payment-pending"))
    handler.on_event(CONFIRMED)
    ec2.reservation(reservation(state="payment-pending"))  # the lookup by id; nothing else
    result = handler.on_event(CONFIRMED)
    assert (result["PhysicalResourceId"], result["Data"]["Mode"]) == ("cr-0bbb", "adopted")
    assert len(ec2.purchase_calls) == 1


def test_after_an_unknown_outcome_a_retry_waits_then_fails_closed_without_searching(
    handler, ec2, outside, records
):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_fails("InternalError", 500)
    with pytest.raises(handler.Error, match="outcome is UNKNOWN"):
        handler.on_event(CONFIRMED)
    for _ in range(POLLS + 1):  # the tag search, every poll of the wait: never an offering search
        ec2.adoption_check()
    with pytest.raises(handler.Error) as refused:
        handler.on_event(CONFIRMED)
    message = str(refused.value)
    assert message.startswith(
        "PurchaseCapacityBlock was sent for this resource (offering cb-0aaa, sent "
        "2026-11-20T09:00Z) and its outcome is unknown; EC2 lists no block of that offering "
        "tagged for this stack after 3 minutes, so nothing is bought again. Look for capacity "
        "reservations tagged trn-kit:stack-name=TrnCluster and "
        "trn-kit:logical-id=CapacityPurchase1A2B3C4D"
    )
    assert message.endswith(
        f"aws dynamodb delete-item --table-name {RECORDS_TABLE} --key "
        f'\'{{"StackId":{{"S":"{STACK_ID}"}},"LogicalId":{{"S":"CapacityPurchase1A2B3C4D"}}}}\''
    )
    assert outside.clock.slept == [LISTING_POLL.total_seconds()] * POLLS
    assert the_record(records)["State"] == "sending"
    assert len(ec2.purchase_calls) == 1


def test_a_purchase_throttled_throughout_is_released_so_the_next_deploy_may_buy(
    handler, ec2, records
):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_throttled_throughout()
    with pytest.raises(handler.Error, match="nothing was bought"):
        handler.on_event(CONFIRMED)
    released = the_record(records)
    assert (released["State"], released["Reason"]) == (
        "not-bought",
        f"EC2 throttled all {PURCHASE_ATTEMPTS} purchase attempts (RequestLimitExceeded)",
    )
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation())
    assert handler.on_event(CONFIRMED)["Data"]["Mode"] == "purchased"
    record = the_record(records)
    assert (record["State"], record["ReservationId"], record["Version"]) == ("bought", "cr-0bbb", 4)
    assert "Reason" not in record
    assert len(ec2.purchase_calls) == PURCHASE_ATTEMPTS + 1


def test_nothing_is_bought_when_the_intent_cannot_be_recorded_first(
    handler, ec2, records, instant_retries
):
    records.fail("PutItem", *["InternalServerError"] * 5)  # every attempt botocore makes
    ec2.adoption_check()
    ec2.offerings(offering())
    with pytest.raises(handler.Error) as refused:
        handler.on_event(CONFIRMED)
    assert str(refused.value).startswith(
        "could not record the intent to buy cb-0aaa before sending the purchase ("
    )
    assert str(refused.value).endswith("); nothing was bought")
    assert records.count("PutItem") == 5
    assert ec2.purchase_calls == []


def test_a_resent_write_of_the_intent_that_had_landed_is_known_as_its_own(
    handler, ec2, records, instant_retries
):
    # The put lands, its answer is lost, botocore resends it and the condition rejects the resend.
    records.fail("PutItem", LOST)
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation())
    assert handler.on_event(CONFIRMED)["Data"]["Mode"] == "purchased"
    assert records.count("PutItem") == 2
    assert the_record(records)["State"] == "bought"
    assert len(ec2.purchase_calls) == 1


def test_a_purchase_is_reported_even_if_its_record_cannot_be_updated(
    handler, ec2, records, instant_retries, caplog
):
    records.fail("UpdateItem", *["InternalServerError"] * 5)
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation())
    result = handler.on_event(CONFIRMED)
    assert (result["PhysicalResourceId"], result["Data"]["Mode"]) == ("cr-0bbb", "purchased")
    assert "could not record that cr-0bbb was bought (the record stays sending)" in caplog.text
    assert the_record(records)["State"] == "sending"
    assert len(ec2.purchase_calls) == 1


def test_a_recorded_block_that_ended_lets_the_next_attempt_buy(handler, ec2, records):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation(state="payment-pending"))
    handler.on_event(CONFIRMED)
    # Payment failed: the recorded block holds nothing.
    ec2.reservation(reservation(state="payment-failed"))
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation("cr-0ccc", state="payment-pending"))
    result = handler.on_event(CONFIRMED)
    assert (result["PhysicalResourceId"], result["Data"]["Mode"]) == ("cr-0ccc", "purchased")
    assert (the_record(records)["ReservationId"], the_record(records)["Version"]) == ("cr-0ccc", 4)
    assert len(ec2.purchase_calls) == 2


def test_a_record_whose_offering_has_ended_is_not_waited_for(handler, ec2, records, outside):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_fails("InternalError", 500)
    with pytest.raises(handler.Error):
        handler.on_event(CONFIRMED)
    # Long after the intended block's end (its window is moved on so the request stays valid).
    outside.clock.sleep(timedelta(days=30).total_seconds())
    later = event(
        "Create",
        properties(
            ConfirmPurchase="true",
            EarliestStart="2026-12-20T00:00:00Z",
            LatestStart="2026-12-28T00:00:00Z",
        ),
    )
    ec2.adoption_check()
    ec2.describe_stub.add_response(
        "describe_capacity_block_offerings",
        {"CapacityBlockOfferings": [offering("cb-0eee", start="2026-12-21T11:30")]},
    )
    ec2.purchase_succeeds(reservation("cr-0eee"))
    assert handler.on_event(later)["PhysicalResourceId"] == "cr-0eee"
    assert the_record(records)["OfferingId"] == "cb-0eee"
    assert len(ec2.purchase_calls) == 2
