"""Purchases remembered in the function's /tmp: a retry before EC2 lists the new block by its tags
neither buys again nor loses the block."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from capacity_fakes import NOW, event, offering, properties, reservation

from trn_constructs.capacity_purchase.handler.capacity_block import request
from trn_constructs.capacity_purchase.handler.capacity_block.purchase import PURCHASE_ATTEMPTS

CONFIRMED = event("Create", properties(ConfirmPurchase="true"))


def test_retry_before_the_tag_search_lists_the_block_adopts_it_by_id(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation(state="payment-pending"))
    assert handler.on_event(CONFIRMED)["Data"]["Mode"] == "purchased"
    # The retry: the tag search is not consistent yet, the lookup by id is.
    ec2.adoption_check()
    ec2.reservation(reservation(state="payment-pending"))
    result = handler.on_event(CONFIRMED)
    assert (result["PhysicalResourceId"], result["Data"]["Mode"]) == ("cr-0bbb", "adopted")
    assert len(ec2.purchase_calls) == 1


def test_retry_after_an_unknown_outcome_refuses_to_buy_again(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_fails("InternalError", 500)
    with pytest.raises(handler.Error, match="outcome is UNKNOWN"):
        handler.on_event(CONFIRMED)
    ec2.adoption_check()
    with pytest.raises(handler.Error) as refused:
        handler.on_event(CONFIRMED)
    assert str(refused.value).startswith(
        "this function sent PurchaseCapacityBlock for offering cb-0aaa at "
        f"{NOW.isoformat()} and its outcome is unknown; EC2 does not list a block tagged for "
        "this resource yet, so nothing is bought again. Deploy again in a few minutes"
    )
    assert len(ec2.purchase_calls) == 1


def test_a_purchase_throttled_throughout_is_forgotten_so_the_next_deploy_may_buy(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_throttled_throughout()
    with pytest.raises(handler.Error, match="nothing was bought"):
        handler.on_event(CONFIRMED)
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation())
    assert handler.on_event(CONFIRMED)["Data"]["Mode"] == "purchased"
    assert len(ec2.purchase_calls) == PURCHASE_ATTEMPTS + 1


def test_a_memory_older_than_an_hour_is_not_trusted(handler, ec2, tmp_path):
    identity = request.Identity.from_event(CONFIRMED)
    stale = {"OfferingId": "cb-0old", "SentAt": (NOW - timedelta(hours=2)).isoformat()}
    handler.module("memory").PurchaseMemory.of(identity).path.write_text(json.dumps(stale))
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation())
    assert handler.on_event(CONFIRMED)["Data"]["Mode"] == "purchased"
    assert len(ec2.purchase_calls) == 1


def test_a_purchase_is_reported_even_if_it_cannot_be_remembered(handler, ec2, monkeypatch):
    writes = []

    def write(memory, record):
        writes.append(record)
        if "CapacityReservationId" in record:
            raise OSError(28, "No space left on device")
        memory.path.write_text(json.dumps(record))

    monkeypatch.setattr(handler.module("memory").PurchaseMemory, "_write", write)
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation())
    result = handler.on_event(CONFIRMED)
    assert (result["PhysicalResourceId"], result["Data"]["Mode"]) == ("cr-0bbb", "purchased")
    assert [sorted(w) for w in writes] == [
        ["OfferingId", "SentAt"], ["CapacityReservationId", "OfferingId", "SentAt"]
    ]
    assert len(ec2.purchase_calls) == 1


def test_nothing_is_bought_when_the_purchase_cannot_be_remembered_first(handler, ec2, monkeypatch):
    def write(memory, record):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(handler.module("memory").PurchaseMemory, "_write", write)
    ec2.adoption_check()
    ec2.offerings(offering())
    with pytest.raises(handler.Error) as refused:
        handler.on_event(CONFIRMED)
    assert str(refused.value) == (
        "could not record the purchase of cb-0aaa before sending it ([Errno 30] Read-only file "
        "system); nothing was bought"
    )
    assert ec2.purchase_calls == []


def test_a_remembered_block_that_ended_is_forgotten_and_a_new_one_may_be_bought(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation(state="payment-pending"))
    handler.on_event(CONFIRMED)
    # Payment failed; the tag search skips ended blocks, the remembered id is looked up and let go.
    ec2.adoption_check()
    ec2.reservation(reservation(state="payment-failed"))
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation("cr-0ccc", state="payment-pending"))
    result = handler.on_event(CONFIRMED)
    assert (result["PhysicalResourceId"], result["Data"]["Mode"]) == ("cr-0ccc", "purchased")
    assert len(ec2.purchase_calls) == 2


def test_an_unknown_outcome_says_when_buying_is_allowed_again(handler, ec2):
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_fails("InternalError", 500)
    with pytest.raises(handler.Error):
        handler.on_event(CONFIRMED)
    ec2.adoption_check()
    expires = request.format_time(NOW + handler.module("memory").MARKER_TTL)
    with pytest.raises(handler.Error, match=f"buys again from {expires}"):
        handler.on_event(CONFIRMED)


@pytest.mark.parametrize("content", ["null", "[]", '{"SentAt": 5}', '{"SentAt": "2026-11-22T08:00"}'])
def test_a_malformed_memory_is_ignored(handler, ec2, content):
    handler.module("memory").PurchaseMemory.of(request.Identity.from_event(CONFIRMED)).path.write_text(content)
    ec2.adoption_check()
    ec2.offerings(offering())
    ec2.purchase_succeeds(reservation())
    assert handler.on_event(CONFIRMED)["Data"]["Mode"] == "purchased"
    assert len(ec2.purchase_calls) == 1
