"""The end-date lookup behind the scheduled end notice: read-only, and loud about a reservation
that is missing, not a Capacity Block, or over."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import Stubber

from trn_constructs.capacity_expiry.handler import index as expiry

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=timezone.utc)
END = datetime(2026, 12, 9, 11, 30, tzinfo=timezone.utc)
RESERVATION = "cr-0123456789abcdef0"


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch, fake_session: boto3.Session):
    client = fake_session.client("ec2")
    monkeypatch.setattr(expiry, "ec2_client", lambda: client)
    monkeypatch.setattr(expiry, "utcnow", lambda: NOW)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def reservation_found(stub: Stubber, **fields) -> None:
    item = {"CapacityReservationId": RESERVATION, "EndDate": END, "State": "active"} | fields
    stub.add_response(
        "describe_capacity_reservations",
        {"CapacityReservations": [{k: v for k, v in item.items() if v is not None}]},
        {"CapacityReservationIds": [RESERVATION]},
    )


def request(request_type: str = "Create", hours: str = "12", **fields) -> dict:
    return {
        "RequestType": request_type,
        "ResourceProperties": {"ReservationId": RESERVATION, "NoticeHoursBefore": hours},
    } | fields


def test_notice_is_due_the_configured_hours_before_the_end(ec2):
    reservation_found(ec2)
    assert expiry.on_event(request()) == {
        "PhysicalResourceId": f"{RESERVATION}-end",
        "Data": {
            "EndDate": "2026-12-09T11:30:00Z",
            "NoticeTime": "2026-12-08T23:30:00Z",
            "NoticeSchedule": "at(2026-12-08T23:30:00)",
        },
    }


def test_a_notice_whose_time_has_passed_is_sent_in_a_few_minutes(ec2):
    # Deployed 5 hours before the end with a 12-hour notice: it must still arrive.
    reservation_found(ec2, EndDate=NOW + timedelta(hours=5))
    data = expiry.on_event(request(request_type="Update", PhysicalResourceId="old"))["Data"]
    assert data["NoticeSchedule"] == "at(2026-12-03T09:05:00)"
    assert data["EndDate"] == "2026-12-03T14:00:00Z"


def test_missing_reservation_fails_naming_the_setting(ec2):
    ec2.add_client_error(
        "describe_capacity_reservations",
        service_error_code="InvalidCapacityReservationId.NotFound",
        http_status_code=400,
    )
    with pytest.raises(expiry.CapacityEndError) as raised:
        expiry.on_event(request())
    assert str(raised.value) == (
        f"capacity reservation {RESERVATION} is not visible to this account in this region; "
        "check capacityReservationId"
    )


def test_reservation_without_end_date_is_not_a_capacity_block(ec2):
    reservation_found(ec2, EndDate=None)
    with pytest.raises(expiry.CapacityEndError, match="it is not a Capacity Block"):
        expiry.on_event(request())


def test_ended_block_fails_the_deployment(ec2):
    reservation_found(ec2, EndDate=NOW - timedelta(minutes=1))
    with pytest.raises(expiry.CapacityEndError) as raised:
        expiry.on_event(request())
    assert str(raised.value) == (
        f"capacity reservation {RESERVATION} ended at 2026-12-03T08:59:00Z; a cluster cannot "
        "launch into it"
    )


def test_other_errors_are_not_mistaken_for_a_missing_block(ec2):
    ec2.add_client_error(
        "describe_capacity_reservations", service_error_code="UnauthorizedOperation"
    )
    with pytest.raises(expiry.ClientError, match="UnauthorizedOperation"):
        expiry.on_event(request())


def test_delete_reads_nothing(ec2):
    assert expiry.on_event(request("Delete", PhysicalResourceId=f"{RESERVATION}-end")) == {
        "PhysicalResourceId": f"{RESERVATION}-end"
    }
