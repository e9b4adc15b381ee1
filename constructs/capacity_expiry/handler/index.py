"""Custom resource handler (CDK Provider framework): when does a Capacity Block end, and when is
its end notice due? It only reads (ec2:DescribeCapacityReservations) and changes nothing.

ResourceProperties (strings): ReservationId, NoticeHoursBefore.
Data: EndDate and NoticeTime (ISO-8601 UTC), and NoticeSchedule, the notice time as an EventBridge
Scheduler one-time expression "at(yyyy-mm-ddThh:mm:ss)" (UTC).

The notice is due NoticeHoursBefore hours before the end. When that moment has already passed
(a stack deployed close to its block's end), it is due a few minutes from now instead, so that it
still arrives. A reservation that is not found, has no end date (not a Capacity Block) or has
ended fails the deployment with a message saying which.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import boto3
from botocore.exceptions import ClientError

LOG = logging.getLogger(__name__)
LOG.setLevel(logging.INFO)

# Long enough for the schedule to be created before it is due.
NOTICE_LEAD = timedelta(minutes=5)


class CapacityEndError(Exception):
    """A failure whose message CloudFormation shows as the resource's failure reason."""


# --- seams the tests replace ----------------------------------------------------------------


def ec2_client():
    return boto3.client("ec2")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def end_date(client, reservation_id: str) -> datetime:
    try:
        response = client.describe_capacity_reservations(CapacityReservationIds=[reservation_id])
    except ClientError as error:
        if not error.response.get("Error", {}).get("Code", "").startswith(
            "InvalidCapacityReservationId"
        ):
            raise
        response = {"CapacityReservations": []}
    if not response["CapacityReservations"]:
        raise CapacityEndError(
            f"capacity reservation {reservation_id} is not visible to this account in this "
            "region; check capacityReservationId"
        )
    end = response["CapacityReservations"][0].get("EndDate")
    if end is None:
        raise CapacityEndError(
            f"capacity reservation {reservation_id} has no end date, so it is not a Capacity "
            "Block; capacityReservationId must name a Capacity Block"
        )
    return end


def on_event(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": event["PhysicalResourceId"]}
    props = event["ResourceProperties"]
    reservation_id = props["ReservationId"]
    end = end_date(ec2_client(), reservation_id)
    now = utcnow()
    if end <= now:
        raise CapacityEndError(
            f"capacity reservation {reservation_id} ended at {_iso(end)}; a cluster cannot "
            "launch into it"
        )
    notice = max(end - timedelta(hours=int(props["NoticeHoursBefore"])), now + NOTICE_LEAD)
    LOG.info("%s ends at %s; end notice at %s", reservation_id, _iso(end), _iso(notice))
    return {
        "PhysicalResourceId": f"{reservation_id}-end",
        "Data": {
            "EndDate": _iso(end),
            "NoticeTime": _iso(notice),
            "NoticeSchedule": f"at({notice.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S})",
        },
    }
