"""Create: dry run, confirmed purchase, adoption instead of a second purchase."""

from __future__ import annotations

import pytest
from capacity_fakes import (
    STACK_ID,
   
    event,
    kit_tags,
    offering,
    offerings_params,
    properties,
    reservation,
)

from trn_constructs.capacity_purchase.handler.capacity_block import request

CONFIRMED = properties(ConfirmPurchase="true")
EXPECTED_PURCHASE = {
    "CapacityBlockOfferingId": "cb-0aaa",
    "InstancePlatform": "Linux/UNIX",
    "TagSpecifications": [
        {
            "ResourceType": "capacity-reservation",
            "Tags": kit_tags() + [{"Key": "team", "Value": "ml"}],
        }
    ],
}


def test_no_matching_offering_fails_naming_the_constraints(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering(hours=192))
    with pytest.raises(handler.Error) as failure:
        handler.on_event(event("Create", CONFIRMED))
    message = str(failure.value)
    for constraint in (
        "4 x trn2.48xlarge",
        "168 h",
        "2026-12-01T00:00Z",
        "2026-12-10T00:00Z",
        "AZ any",
        "<= 50000.00 USD",
    ):
        assert constraint in message
    assert "1 other duration" in message and "nothing was bought" in message
    assert ec2.purchase_calls == []


def test_cheapest_offering_above_the_cap_fails_and_buys_nothing(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering("cb-1", fee="90000.00"), offering("cb-2", fee="55000.00"))
    with pytest.raises(
        handler.Error,
        match="cb-2 costs 55000.00 USD, above maxUpfrontFeeUsd 50000.00",
    ):
        handler.on_event(event("Create", CONFIRMED))
    assert ec2.purchase_calls == []


def test_dry_run_reports_the_offering_and_buys_nothing(handler, ec2, records):
    ec2.adoption_check()
    ec2.offerings(
        offering("cb-0aaa", fee="12345"), offering("cb-later", start="2026-12-03T11:30", fee="100")
    )
    result = handler.on_event(event("Create", properties()))
    assert ec2.purchase_calls == []
    assert records.sends == ["GetItem"]  # a dry run only reads the purchase record
    assert result["PhysicalResourceId"] == request.dry_run_physical_id(properties())
    assert result["Data"] == {
        "CapacityReservationId": "",
        "AvailabilityZone": "us-east-2b",
        "InstanceType": "trn2.48xlarge",
        "InstanceCount": "4",
        "StartDate": "2026-12-02T11:30:00Z",
        "EndDate": "2026-12-09T11:30:00Z",
        "UpfrontFee": "12345.00",
        "CurrencyCode": "USD",
        "OfferingId": "cb-0aaa",
        "Mode": "dry-run",
        "Summary": "DRY RUN: would buy cb-0aaa 4 x trn2.48xlarge in us-east-2b "
        "2026-12-02T11:30Z..2026-12-09T11:30Z for 12345.00 USD; set capacityPurchaseConfirm=true "
        "to buy",
    }
    assert handler.is_complete(event("Create", properties()) | result) == {"IsComplete": True}


def test_confirmed_purchase_buys_exactly_once_with_the_idempotency_tags(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation(state="payment-pending"))
    result = handler.on_event(event("Create", CONFIRMED))
    assert ec2.purchase_calls == [EXPECTED_PURCHASE]
    assert result["PhysicalResourceId"] == "cr-0bbb"
    assert result["AwaitBlockListedBy"] == "2026-11-20T09:15:00Z"
    assert result["Data"]["Mode"] == "purchased"
    assert result["Data"]["CapacityReservationId"] == "cr-0bbb"
    assert result["Data"]["Summary"].startswith("PURCHASED cr-0bbb: cb-0aaa 4 x trn2.48xlarge")


def test_ultraserver_purchase_searches_by_ultraserver_type_and_count(handler, ec2):
    props = properties(
        InstanceType="trn2u.48xlarge",
        UltraserverType="u-trn2x64",
        UltraserverCount="1",
        ConfirmPurchase="true",
    )
    ec2.adoption_check()
    ec2.offerings(
        offering(InstanceType="trn2u.48xlarge", UltraserverType="u-trn2x64", UltraserverCount=1),
        params=offerings_params(
            InstanceType=None, InstanceCount=None, UltraserverType="u-trn2x64", UltraserverCount=1
        ),
    )
    ec2.purchase_stub.add_response(
        "purchase_capacity_block",
        {
            "CapacityReservation": reservation(InstanceType="trn2u.48xlarge"),
            "CapacityBlocks": [
                {
                    "CapacityBlockId": "cb-block",
                    "UltraserverType": "u-trn2x64",
                    "CapacityReservationIds": ["cr-0bbb"],
                }
            ],
        },
    )
    result = handler.on_event(event("Create", props))
    assert len(ec2.purchase_calls) == 1
    assert (result["PhysicalResourceId"], result["Data"]["InstanceType"]) == (
        "cr-0bbb",
        "trn2u.48xlarge",
    )


def test_retry_after_a_successful_purchase_adopts_and_buys_nothing(handler, ec2):
    ec2.adoption_check(reservation(state="payment-pending"))
    result = handler.on_event(event("Create", CONFIRMED))
    assert ec2.purchase_calls == []
    assert result["PhysicalResourceId"] == "cr-0bbb"
    assert result["AwaitBlockListedBy"] == "2026-11-20T09:15:00Z"
    assert (result["Data"]["Mode"], result["Data"]["UpfrontFee"], result["Data"]["OfferingId"]) == (
        "adopted",
        "20000.00",
        "cb-0aaa",
    )


def test_stack_recreated_with_a_new_stack_id_adopts_by_stack_name(handler, ec2):
    bought_by_first_stack = reservation(
        tags=kit_tags(stack_id=STACK_ID.replace("11111111", "99999999"))
    )
    ec2.adoption_check(bought_by_first_stack)
    result = handler.on_event(event("Create", CONFIRMED))
    assert ec2.purchase_calls == []
    assert result["Data"]["Mode"] == "adopted"


@pytest.mark.parametrize("state", ["cancelled", "expired", "failed", "payment-failed"])
def test_blocks_in_terminal_states_are_not_adopted(handler, ec2, state):
    ec2.adoption_check(reservation("cr-dead", state=state))
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation())
    assert handler.on_event(event("Create", CONFIRMED))["Data"]["Mode"] == "purchased"
    assert len(ec2.purchase_calls) == 1


def test_reservation_returned_without_matching_tags_is_not_adopted(handler, ec2):
    # Guards against a filter the service might ignore: the tags are checked again locally.
    ec2.adoption_check(
        reservation("cr-other", tags=[{"Key": "trn-kit:stack-name", "Value": "OtherStack"}])
    )
    ec2.offerings(offering())
    result = handler.on_event(event("Create", properties()))
    assert result["Data"]["Mode"] == "dry-run"


def test_two_live_tagged_blocks_refuse_rather_than_pick_or_buy(handler, ec2):
    ec2.adoption_check(reservation("cr-1"), reservation("cr-2"))
    with pytest.raises(
        handler.Error, match="several live capacity reservations.*cr-1, cr-2"
    ):
        handler.on_event(event("Create", CONFIRMED))
    assert ec2.purchase_calls == []


def test_tagged_block_that_does_not_fit_the_settings_is_neither_adopted_nor_doubled(handler, ec2):
    ec2.adoption_check(reservation())
    with pytest.raises(handler.Error) as failure:
        handler.on_event(event("Create", properties(InstanceCount="8", ConfirmPurchase="true")))
    assert "does not fit the settings (4 instances)" in str(failure.value)
    assert "refusing to buy a second block" in str(failure.value)
    assert ec2.purchase_calls == []


def test_dry_run_with_a_tagged_block_reports_it_would_be_adopted(handler, ec2):
    ec2.adoption_check(reservation())
    result = handler.on_event(event("Create", properties()))
    assert result["Data"]["Mode"] == "dry-run"
    assert result["Data"]["CapacityReservationId"] == ""
    assert result["Data"]["Summary"].startswith("DRY RUN: this stack already holds cr-0bbb")


def test_invalid_settings_fail_before_any_call(handler, ec2):
    with pytest.raises(handler.Error, match="not a Capacity Block duration"):
        handler.on_event(
            event("Create", properties(CapacityDurationHours="100", ConfirmPurchase="true")),
        )
    assert ec2.purchase_calls == []
