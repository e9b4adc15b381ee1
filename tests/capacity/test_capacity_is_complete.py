"""is_complete: after a purchase or adoption, wait (a bounded time) for EC2 to list the block and
for its payment; nothing to wait for otherwise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from capacity_fakes import event, properties, reservation

AFTER_PURCHASE = event("Create", properties(ConfirmPurchase="true")) | {
    "PhysicalResourceId": "cr-0bbb",
    "Data": {"Mode": "purchased"},
    "AwaitBlockListedBy": "2026-11-20T09:15:00Z",
}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("scheduled", {"IsComplete": True}),
        ("active", {"IsComplete": True}),
        ("payment-pending", {"IsComplete": False}),
    ],
)
def test_waits_only_while_payment_is_pending(handler, ec2, state, expected):
    ec2.reservation(reservation(state=state))
    # The Provider framework rejects Data alongside IsComplete false, so none is returned.
    assert handler.is_complete(AFTER_PURCHASE) == expected


def not_listed(ec2) -> None:
    ec2.describe_stub.add_client_error(
        "describe_capacity_reservations",
        service_error_code="InvalidCapacityReservationId.NotFound",
        http_status_code=400,
        expected_params={"CapacityReservationIds": ["cr-0bbb"]},
    )


def test_waits_while_ec2_does_not_list_the_block_yet_then_fails_closed(handler, ec2, outside):
    not_listed(ec2)
    assert handler.is_complete(AFTER_PURCHASE) == {"IsComplete": False}
    outside.clock.sleep(timedelta(minutes=15).total_seconds())
    not_listed(ec2)
    with pytest.raises(handler.Error) as failure:
        handler.is_complete(AFTER_PURCHASE)
    assert str(failure.value).startswith(
        "capacity block cr-0bbb, held by this resource, is still not listed by EC2 at "
        "2026-11-20T09:15:00Z; nothing is bought again"
    )
    assert ec2.purchase_calls == []


def test_payment_failure_fails_with_a_clear_message(handler, ec2):
    ec2.reservation(reservation(state="payment-failed"))
    with pytest.raises(
        handler.Error, match="payment for capacity block cr-0bbb failed"
    ):
        handler.is_complete(AFTER_PURCHASE)


def test_an_unusable_state_after_purchase_fails(handler, ec2):
    ec2.reservation(reservation(state="unavailable"))
    with pytest.raises(
        handler.Error, match="cr-0bbb is unavailable, not scheduled or active"
    ):
        handler.is_complete(AFTER_PURCHASE)


def test_dry_run_and_reports_of_a_held_block_complete_at_once(handler, ec2):
    dry_run = event("Create", properties()) | {
        "PhysicalResourceId": "dry-run-0",
        "Data": {"Mode": "dry-run"},
    }
    kept = event("Update", properties()) | {
        "PhysicalResourceId": "cr-0bbb",
        "Data": {"Mode": "adopted"},
    }
    assert handler.is_complete(dry_run) == {"IsComplete": True}
    assert handler.is_complete(kept) == {"IsComplete": True}
