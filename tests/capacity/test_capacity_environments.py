"""Retries across Lambda environments while EC2 does not list a block bought moments ago: each
attempt runs in a fresh environment (own /tmp, fresh import of the handler) against one EC2 with a
listing lag and one table of purchase records. Every test counts PurchaseCapacityBlock calls."""

from __future__ import annotations

from datetime import timedelta

import pytest
from capacity_fakes import LOGICAL_ID, RECORDS_TABLE, STACK_ID, event, properties
from fake_ec2 import LOST

from trn_constructs.capacity_purchase.handler.capacity_block.adoption import LISTING_WAIT

CONFIRMED = event("Create", properties(ConfirmPurchase="true"))


def test_a_retry_in_a_fresh_environment_inside_the_lag_buys_nothing(
    new_environment, fake_ec2, outside
):
    fake_ec2.lag = timedelta(minutes=2)
    first, retry = new_environment(), new_environment()
    bought = first.on_event(CONFIRMED)
    assert bought["Data"]["Mode"] == "purchased"
    # EC2's tag search does not list the block yet, and another matching offering is listed.
    adopted = retry.on_event(CONFIRMED)
    assert (adopted["PhysicalResourceId"], adopted["Data"]["Mode"]) == (
        bought["PhysicalResourceId"],
        "adopted",
    )
    assert timedelta(seconds=sum(outside.clock.slept)) == timedelta(minutes=2)
    assert fake_ec2.count("DescribeCapacityBlockOfferings") == 1
    assert len(fake_ec2.purchases) == 1
    # The environments kept nothing in /tmp: the record is the only memory.
    assert [list(env.tmp.iterdir()) for env in (first, retry)] == [[], []]


def test_a_lost_purchase_response_then_a_fresh_retry_buys_nothing(
    new_environment, fake_ec2, records
):
    fake_ec2.lag = timedelta(minutes=1)
    fake_ec2.outcomes = [LOST]
    first = new_environment()
    with pytest.raises(first.Error, match="ReadTimeoutError.*outcome is UNKNOWN"):
        first.on_event(CONFIRMED)
    (block,) = fake_ec2.bought()  # EC2 executed it
    adopted = new_environment().on_event(CONFIRMED)
    assert (adopted["PhysicalResourceId"], adopted["Data"]["Mode"]) == (block, "adopted")
    (record,) = records.items(RECORDS_TABLE)
    assert (record["State"], record["ReservationId"]) == ("bought", block)
    # A later retry finds the block by the id recorded, at once.
    assert new_environment().on_event(CONFIRMED)["PhysicalResourceId"] == block
    assert fake_ec2.count("DescribeCapacityBlockOfferings") == 1
    assert len(fake_ec2.purchases) == 1


def test_a_lost_purchase_not_listed_in_time_fails_closed_until_ec2_lists_it(
    new_environment, fake_ec2, outside
):
    fake_ec2.lag = LISTING_WAIT + timedelta(minutes=5)
    fake_ec2.outcomes = [LOST]
    first, retry = new_environment(), new_environment()
    with pytest.raises(first.Error, match="outcome is UNKNOWN"):
        first.on_event(CONFIRMED)
    with pytest.raises(retry.Error) as refused:
        retry.on_event(CONFIRMED)
    message = str(refused.value)
    assert "(offering cb-0aaa, sent 2026-11-20T09:00Z) and its outcome is unknown" in message
    assert f"trn-kit:stack-name=TrnCluster and trn-kit:logical-id={LOGICAL_ID}" in message
    assert fake_ec2.count("DescribeCapacityBlockOfferings") == 1  # the first attempt's only
    outside.clock.sleep(timedelta(minutes=5).total_seconds())
    adopted = new_environment().on_event(CONFIRMED)
    assert adopted["PhysicalResourceId"] == fake_ec2.bought()[0]
    assert len(fake_ec2.purchases) == 1


def test_two_stacks_in_one_account_each_keep_to_their_own_block(
    new_environment, fake_ec2, records
):
    fake_ec2.lag = timedelta(minutes=2)
    other_table = "OtherCluster-CapacityPurchaseRecords0B56D99C-9ZYXWVU"
    records.create_table(other_table)
    other_id = STACK_ID.replace("TrnCluster/11111111", "OtherCluster/22222222")
    other = event("Create", properties(ConfirmPurchase="true", StackName="OtherCluster"))
    other |= {"StackId": other_id}
    ours = new_environment().on_event(CONFIRMED)["PhysicalResourceId"]
    theirs = new_environment(other_table).on_event(other)["PhysicalResourceId"]
    assert ours != theirs
    # Fresh retries of both, inside the lag, each adopt their own.
    assert new_environment(other_table).on_event(other)["PhysicalResourceId"] == theirs
    assert new_environment().on_event(CONFIRMED)["PhysicalResourceId"] == ours
    assert [r["ReservationId"] for r in records.items(RECORDS_TABLE)] == [ours]
    assert [(r["StackId"], r["ReservationId"]) for r in records.items(other_table)] == [
        (other_id, theirs)
    ]
    assert len(fake_ec2.purchases) == 2


def test_a_delete_never_removes_the_record_of_a_bought_block(new_environment, fake_ec2, records):
    fake_ec2.lag = timedelta(minutes=2)
    block = new_environment().on_event(CONFIRMED)["PhysicalResourceId"]
    before = records.items(RECORDS_TABLE)
    deleted = CONFIRMED | {"RequestType": "Delete", "PhysicalResourceId": block}
    assert new_environment().on_event(deleted) == {"PhysicalResourceId": block}
    assert records.items(RECORDS_TABLE) == before
    assert "DeleteItem" not in records.sends
    # A create retried after the delete (e.g. a rollback's) still finds and adopts the block.
    assert new_environment().on_event(CONFIRMED)["PhysicalResourceId"] == block
    assert len(fake_ec2.purchases) == 1


def test_of_two_concurrent_runs_only_the_one_that_records_first_buys(
    new_environment, fake_ec2, records
):
    slow, fast = new_environment(), new_environment()
    # The fast run goes from start to finish while the slow one searches offerings.
    fake_ec2.during_offerings = lambda: fast.on_event(CONFIRMED)
    with pytest.raises(slow.Error) as refused:
        slow.on_event(CONFIRMED)
    assert str(refused.value).startswith(
        "the purchase record of this resource changed while this attempt was about to buy "
        "(it is now bought for offering cb-0aaa); nothing was bought by this attempt"
    )
    (record,) = records.items(RECORDS_TABLE)
    assert record["ReservationId"] == fake_ec2.bought()[0]
    assert len(fake_ec2.purchases) == 1


def test_is_complete_right_after_a_purchase_waits_through_the_lag(
    new_environment, fake_ec2, outside
):
    fake_ec2.lag = timedelta(minutes=3)
    bought = new_environment().on_event(CONFIRMED)
    polled = CONFIRMED | bought  # as the Provider framework hands it on
    answers = []
    for minute in range(5):  # the Provider polls once a minute
        if minute == 4:
            fake_ec2.set_state(bought["PhysicalResourceId"], "scheduled")  # paid
        answers.append(new_environment().is_complete(polled)["IsComplete"])
        outside.clock.sleep(60)
    # Not listed for three minutes, then listed and payment-pending, then paid.
    assert answers == [False, False, False, False, True]
    assert len(fake_ec2.purchases) == 1
