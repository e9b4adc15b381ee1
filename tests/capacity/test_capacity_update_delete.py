"""Update and Delete: a held block is never exchanged, re-bought or cancelled."""

from __future__ import annotations

import pytest
from capacity_fakes import event, offering, offerings_params, properties, reservation

from trn_constructs.capacity_purchase.handler.capacity_block import request

BOUGHT = properties(ConfirmPurchase="true")
DRY_RUN_ID = request.dry_run_physical_id(properties())


def update(new: dict, old: dict = BOUGHT, physical_id: str = "cr-0bbb") -> dict:
    return event("Update", new, OldResourceProperties=old, PhysicalResourceId=physical_id)


def test_changed_purchase_settings_are_refused_and_nothing_is_bought(handler, ec2):
    ec2.reservation(reservation())
    with pytest.raises(handler.Error) as failure:
        handler.on_event(
            update(
                properties(ConfirmPurchase="true", InstanceCount="8", CapacityDurationHours="336")
            ),
        )
    message = str(failure.value)
    assert message.startswith(
        "refusing to change CapacityDurationHours, InstanceCount: "
        "this resource holds capacity block cr-0bbb"
    )
    assert "cannot be exchanged, modified or cancelled" in message
    assert ec2.purchase_calls == []


def test_rollback_to_the_settings_the_block_was_bought_with_is_accepted(handler, ec2):
    # CloudFormation rolls a failed update back with an Update carrying the old settings.
    ec2.reservation(reservation())
    result = handler.on_event(
        update(BOUGHT, old=properties(ConfirmPurchase="true", InstanceCount="8"))
    )
    assert result["PhysicalResourceId"] == "cr-0bbb"
    assert "changed InstanceCount still satisfied" in result["Data"]["Summary"]
    assert ec2.purchase_calls == []


def test_tags_only_change_is_accepted_and_reports_the_block(handler, ec2):
    ec2.reservation(reservation(state="active"))
    result = handler.on_event(
        update(properties(ConfirmPurchase="true", Tags=[{"Key": "team", "Value": "infra"}])),
    )
    assert result["PhysicalResourceId"] == "cr-0bbb"
    assert result["Data"]["Mode"] == "adopted"
    assert result["Data"]["Summary"].startswith("KEEPS cr-0bbb: 4 x trn2.48xlarge in us-east-2b")
    assert "AwaitBlockListedBy" not in result
    assert ec2.purchase_calls == []


def test_confirmation_withdrawn_after_purchase_keeps_reporting_the_block(handler, ec2):
    ec2.reservation(reservation())
    result = handler.on_event(update(properties(ConfirmPurchase="false")))
    assert (result["PhysicalResourceId"], result["Data"]["CapacityReservationId"]) == (
        "cr-0bbb",
        "cr-0bbb",
    )
    assert ec2.purchase_calls == []


def test_confirming_a_dry_run_buys_exactly_once(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation(state="payment-pending"))
    result = handler.on_event(update(BOUGHT, old=properties(), physical_id=DRY_RUN_ID))
    assert len(ec2.purchase_calls) == 1
    assert (result["PhysicalResourceId"], result["Data"]["Mode"]) == ("cr-0bbb", "purchased")


def test_a_dry_run_may_change_its_settings(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering(InstanceCount=8), params=offerings_params(InstanceCount=8))
    result = handler.on_event(
        update(properties(InstanceCount="8"), old=properties(), physical_id=DRY_RUN_ID),
    )
    assert result["Data"]["Mode"] == "dry-run"
    changed = properties(InstanceCount="8")
    assert result["PhysicalResourceId"] == request.dry_run_physical_id(changed)
    assert ec2.purchase_calls == []


@pytest.mark.parametrize("physical_id", ["cr-0bbb", DRY_RUN_ID])
def test_delete_buys_nothing_cancels_nothing_and_calls_nothing(handler, ec2, caplog, physical_id):
    caplog.set_level("INFO")
    request = event("Delete", BOUGHT, PhysicalResourceId=physical_id)
    assert handler.on_event(request) == {"PhysicalResourceId": physical_id}
    assert handler.is_complete(request) == {"IsComplete": True}
    assert ec2.purchase_calls == []
    if physical_id.startswith("cr-"):
        assert "is NOT cancelled" in caplog.text and "billed, until its end date" in caplog.text
