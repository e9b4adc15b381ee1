"""Capacity Block end warnings, to the alert topic, so people checkpoint before EC2 terminates the
block's instances (from 30 minutes before its end).

* A scheduled notice ``notice_hours`` before the end: an EventBridge Scheduler one-time schedule
  whose time a small read-only custom resource derives from the reservation's EndDate. The same
  lookup serves a block the user holds and one the kit bought (it reads the reservation either
  way), and it fails the deployment early when capacityReservationId names no live Capacity Block.
* EC2's own warning: an EventBridge rule on the "Capacity Block Expiration Warning" event for this
  reservation, which EC2 sends 40 minutes before the end, 10 minutes before terminations start.

A warning that cannot be published (EC2 sends its own only once) lands in a dead-letter queue, whose
alarm tells the alert topic.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CustomResource, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from constructs import Construct

from trn_constructs.findings import acknowledge
from trn_constructs.handlers import read_only_lookup
from trn_constructs.undelivered import UndeliveredEvents

HERE = Path(__file__).resolve().parent
RESOURCE_TYPE = "Custom::CapacityBlockEnd"
EVENT_SOURCE = "aws.ec2"
# EC2's user guide has named this event both ways over time; matching either costs nothing.
EXPIRY_WARNING_DETAIL_TYPES = (
    "Capacity Block Expiration Warning",
    "Capacity Block Reservation Expiration Warning",
)
# A warning is worth retrying until shortly before the block ends, not for EventBridge's default day.
DELIVERY_WINDOW = Duration.minutes(30)
KEY_GRANT_FINDING = "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]"
KEY_GRANT_REASON = (
    "Publishing to the alert topic encrypts with its KMS key: GenerateDataKey* on that one key"
)


def warning(block: str, end: str, left: str, then: str = "") -> str:
    """The message both warnings send: when the block ends, how long is left, and to checkpoint."""
    return (
        f"Capacity Block {block} ends at {end}, in about {left}. EC2 terminates its instances from 30 "
        f"minutes before the end{then}; 40 minutes before it, at EC2's own warning, the kit stops new "
        "work (Slurm drains the Trainium nodes, EKS cordons them). Checkpoint your training now: what "
        "is not on the shared file system or in S3 is lost with the instances."
    )


def hours(count: int) -> str:
    return f"{count} hour{'s' if count != 1 else ''}"


class CapacityExpiryWarnings(Construct):
    """Warns the alert topic before the Capacity Block ``reservation_id`` ends.

    Attributes:
        end_date, notice_time: deploy-time strings, ISO-8601 UTC.
        dead_letters: the queue of warnings that could not be published (encrypted with ``key``,
            the topic's), and its alarm ``undelivered``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        reservation_id: str,
        topic: sns.ITopic,
        key: kms.Key,
        notice_hours: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        undelivered = UndeliveredEvents(
            self, "Undelivered", topic=topic, key=key,
            what="a Capacity Block end warning to the alert topic",
            alarm_suffix="capacity-end-warning-undelivered",
        )  # fmt: skip
        self.dead_letters, self.undelivered = undelivered.queue, undelivered.alarm
        self._add_ec2_warning(reservation_id, topic)
        lookup = self._end_lookup(reservation_id, notice_hours, log_retention)
        self.end_date = lookup.get_att_string("EndDate")
        self.notice_time = lookup.get_att_string("NoticeTime")
        role = iam.Role(
            self,
            "NoticeRole",
            description="EventBridge Scheduler: publish the Capacity Block end notice",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
        )
        scheduler.Schedule(
            self,
            "EndNotice",
            description=f"Capacity Block end notice, {notice_hours} h before the end",
            schedule=scheduler.ScheduleExpression.expression(
                lookup.get_att_string("NoticeSchedule")
            ),
            target=scheduler_targets.SnsPublish(
                topic,
                role=role,
                input=scheduler.ScheduleTargetInput.from_text(
                    warning(reservation_id, self.end_date, hours(notice_hours))
                ),
                dead_letter_queue=self.dead_letters,
                max_event_age=DELIVERY_WINDOW,
            ),
        )
        acknowledge(role, KEY_GRANT_FINDING, KEY_GRANT_REASON)

    def _add_ec2_warning(self, reservation_id: str, topic: sns.ITopic) -> None:
        rule = events.Rule(
            self,
            "ExpiryWarning",
            description="EC2's Capacity Block expiration warning for the cluster's block",
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE],
                detail_type=list(EXPIRY_WARNING_DETAIL_TYPES),
                detail={"capacity-reservation-id": [reservation_id]},
            ),
        )
        rule.add_target(
            events_targets.SnsTopic(
                topic,
                # A role scoped to this topic rather than a topic policy for every rule.
                authorize_using_role=True,
                message=events.RuleTargetInput.from_text(
                    warning(
                        events.EventField.from_path("$.detail.capacity-reservation-id"),
                        events.EventField.from_path("$.detail.end-date"),
                        # EC2 sends its warning 40 minutes before the end.
                        "40 minutes",
                        then=", in about 10 minutes",
                    )
                ),
                dead_letter_queue=self.dead_letters,
                max_event_age=DELIVERY_WINDOW,
            )
        )
        acknowledge(rule, KEY_GRANT_FINDING, KEY_GRANT_REASON)

    def _end_lookup(
        self, reservation_id: str, notice_hours: int, log_retention: logs.RetentionDays
    ) -> CustomResource:
        return read_only_lookup(
            self,
            "End",
            handler_dir=HERE / "handler",
            action="ec2:DescribeCapacityReservations",
            reason="DescribeCapacityReservations has no resource-level permissions; the lookup "
            "reads one reservation's end date",
            description="Capacity Block end: read the reservation's end date",
            resource_type=RESOURCE_TYPE,
            properties={"ReservationId": reservation_id, "NoticeHoursBefore": str(notice_hours)},
            log_retention=log_retention,
        )
