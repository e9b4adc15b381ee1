"""A dead-letter queue for events the kit must not lose silently (a Capacity Block warning, the start
of a handover, the stop of new work), with an alarm on the alert topic for anything in it."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from trn_constructs.findings import acknowledge

RETENTION = Duration.days(14)


class UndeliveredEvents(Construct):
    """Attributes: ``queue`` (encrypted with ``key``, the alert topic's) and its ``alarm``, named
    ``<stack>-<alarm_suffix>``, which tells ``topic`` when ``what`` could not be delivered."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topic: sns.ITopic,
        key: kms.IKey,
        what: str,
        alarm_suffix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            retention_period=RETENTION,
            enforce_ssl=True,
        )
        acknowledge(self.queue, "AwsSolutions-SQS3", f"It is itself the dead-letter queue, of {what}")
        # EventBridge rules deliver to an encrypted dead-letter queue as their service principal.
        key.grant(
            iam.ServicePrincipal(
                "events.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            "kms:Decrypt",
            "kms:GenerateDataKey",
        )
        self.alarm = cloudwatch.Alarm(
            self,
            "Alarm",
            alarm_name=f"{stack.stack_name}-{alarm_suffix}",
            alarm_description=(
                f"Undelivered: {what}. The event waits in SQS queue {self.queue.queue_name} (14 days)"
            ),
            metric=self.queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        # The alarm publishes as CloudWatch, not through the failed target's path.
        self.alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))
        self.alarm.add_ok_action(cloudwatch_actions.SnsAction(topic))
