"""is_complete: wait for payment after a purchase or adoption; nothing to wait for otherwise."""

from __future__ import annotations

import pytest
from capacity_fakes import call, event, properties, reservation

from trn_constructs.capacity_purchase.handler import index

AFTER_PURCHASE = event("Create", properties(ConfirmPurchase="true")) | {
    "PhysicalResourceId": "cr-0bbb",
    "Data": {"Mode": "purchased"},
    "AwaitPayment": "true",
}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("scheduled", {"IsComplete": True}),
        ("active", {"IsComplete": True}),
        ("payment-pending", {"IsComplete": False}),
    ],
)
def test_waits_only_while_payment_is_pending(ec2, state, expected):
    ec2.reservation(reservation(state=state))
    # The Provider framework rejects Data alongside IsComplete false, so none is returned.
    assert call(index.is_complete, AFTER_PURCHASE) == expected


def test_payment_failure_fails_with_a_clear_message(ec2):
    ec2.reservation(reservation(state="payment-failed"))
    with pytest.raises(
        index.CapacityPurchaseError, match="payment for capacity block cr-0bbb failed"
    ):
        call(index.is_complete, AFTER_PURCHASE)


def test_an_unusable_state_after_purchase_fails(ec2):
    ec2.reservation(reservation(state="unavailable"))
    with pytest.raises(
        index.CapacityPurchaseError, match="cr-0bbb is unavailable, not scheduled or active"
    ):
        call(index.is_complete, AFTER_PURCHASE)


def test_dry_run_and_reports_of_a_held_block_complete_at_once(ec2):
    dry_run = event("Create", properties()) | {
        "PhysicalResourceId": "dry-run-0",
        "Data": {"Mode": "dry-run"},
    }
    kept = event("Update", properties()) | {
        "PhysicalResourceId": "cr-0bbb",
        "Data": {"Mode": "adopted"},
    }
    assert call(index.is_complete, dry_run) == {"IsComplete": True}
    assert call(index.is_complete, kept) == {"IsComplete": True}
