"""The alert topic and the Capacity Block end warnings: EC2's expiry-warning rule for this
reservation and the scheduled notice before the end, for a held block and a bought one."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from tests.capacity.templates import (
    PURCHASE_LOGICAL_ID,
    function_named,
    function_role,
    named,
    only,
    resources_of,
    role_statements,
)
from tests.conftest import synth_variant
from trn_constructs.capacity_expiry import EXPIRY_WARNING_DETAIL_TYPES, warning

HELD = "cr-0123456789abcdef0"


@pytest.fixture(scope="module")
def confirmed():
    return synth_variant("purchase-confirmed")


def alert_topic(synthesized) -> str:
    return named(synthesized, "AWS::SNS::Topic", "AlertsTopic")


def alert_key(synthesized) -> str:
    return named(synthesized, "AWS::KMS::Key", "AlertsKey")


def expiry_rule(synthesized) -> dict:
    name = named(synthesized, "AWS::Events::Rule", "CapacityExpiry")
    return synthesized.template_json["Resources"][name]


def publish_only(synthesized) -> list[dict]:
    """Publishing to the alert topic: its ARN and its key, nothing else."""
    topic, key = alert_topic(synthesized), alert_key(synthesized)
    return [
        {"Action": "sns:Publish", "Effect": "Allow", "Resource": {"Ref": topic}},
        {
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [key, "Arn"]},
        },
    ]


def dead_letters(synthesized) -> str:
    return named(synthesized, "AWS::SQS::Queue", "CapacityExpiryUndeliveredQueue")


def test_topic_is_kms_encrypted_with_a_rotated_key_and_ssl_only(default_stack):
    template = default_stack.template
    resources = default_stack.template_json["Resources"]
    topic, key = alert_topic(default_stack), alert_key(default_stack)
    assert resources[key]["Properties"]["EnableKeyRotation"] is True
    assert resources[topic]["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic}],
            "PolicyDocument": {
                "Statement": [
                    {
                        "Action": "sns:Publish",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        "Effect": "Deny",
                        "Principal": "*",
                        "Resource": {"Ref": topic},
                        "Sid": Match.any_value(),
                    }
                ]
            },
        },
    )
    assert default_stack.template_json["Outputs"]["AlertTopicArn"]["Value"] == {"Ref": topic}


def test_email_subscription_only_when_alert_email_is_set(default_stack, confirmed):
    def subscriptions(synthesized) -> list[dict]:
        topic = {"Ref": alert_topic(synthesized)}
        return [
            resource["Properties"]
            for resource in resources_of(synthesized, "AWS::SNS::Subscription").values()
            if resource["Properties"]["TopicArn"] == topic
        ]

    assert subscriptions(default_stack) == []
    assert subscriptions(confirmed) == [
        {
            "Endpoint": "ml-team@example.com",
            "Protocol": "email",
            "TopicArn": {"Ref": alert_topic(confirmed)},
        }
    ]


def test_rule_matches_ec2s_expiry_warning_for_the_held_block(default_stack):
    rule = expiry_rule(default_stack)
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.ec2"],
        "detail-type": list(EXPIRY_WARNING_DETAIL_TYPES),
        "detail": {"capacity-reservation-id": [HELD]},
    }
    assert "Capacity Block Expiration Warning" in EXPIRY_WARNING_DETAIL_TYPES


def test_rule_tells_the_topic_to_checkpoint_through_a_publish_only_role(default_stack):
    rule = expiry_rule(default_stack)
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": alert_topic(default_stack)}
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {
        "detail-capacity-reservation-id": "$.detail.capacity-reservation-id",
        "detail-end-date": "$.detail.end-date",
    }
    assert transformer["InputTemplate"] == json.dumps(
        warning(
            "<detail-capacity-reservation-id>", "<detail-end-date>", "40 minutes", then=", in about 10 minutes"
        )
    )
    role = target["RoleArn"]["Fn::GetAtt"][0]
    assert role_statements(default_stack, role) == publish_only(default_stack)


def test_rule_follows_the_bought_block(confirmed):
    rule = expiry_rule(confirmed)
    assert rule["Properties"]["EventPattern"]["detail"] == {
        "capacity-reservation-id": [{"Fn::GetAtt": [PURCHASE_LOGICAL_ID, "CapacityReservationId"]}]
    }


def test_end_lookup_reads_the_held_block_with_the_configured_notice(default_stack, confirmed):
    lookup, resource = only(default_stack, "Custom::CapacityBlockEnd")
    assert {k: v for k, v in resource["Properties"].items() if k != "ServiceToken"} == {
        "ReservationId": HELD,
        "NoticeHoursBefore": "12",
    }
    _, bought = only(confirmed, "Custom::CapacityBlockEnd")
    assert bought["Properties"]["ReservationId"] == {
        "Fn::GetAtt": [PURCHASE_LOGICAL_ID, "CapacityReservationId"]
    }
    assert bought["Properties"]["NoticeHoursBefore"] == "6"
    outputs = default_stack.template_json["Outputs"]
    assert outputs["CapacityBlockEndDate"]["Value"] == {"Fn::GetAtt": [lookup, "EndDate"]}
    assert outputs["CapacityEndNoticeTime"]["Value"] == {"Fn::GetAtt": [lookup, "NoticeTime"]}


def test_end_lookup_may_only_read_reservations(default_stack):
    lookup = function_named(default_stack, "Capacity Block end")
    assert lookup["Handler"] == "index.on_event"
    assert role_statements(default_stack, function_role(lookup)) == [
        {"Action": "ec2:DescribeCapacityReservations", "Effect": "Allow", "Resource": "*"}
    ]


def test_schedule_publishes_the_end_notice_at_the_looked_up_time(default_stack):
    lookup, _ = only(default_stack, "Custom::CapacityBlockEnd")
    (schedule,) = [s for name, s in resources_of(default_stack, "AWS::Scheduler::Schedule").items()
                   if name.startswith("CapacityExpiry")]
    properties = schedule["Properties"]
    assert properties["ScheduleExpression"] == {"Fn::GetAtt": [lookup, "NoticeSchedule"]}
    assert properties["ScheduleExpressionTimezone"] == "Etc/UTC"
    assert properties["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = properties["Target"]
    assert target["Arn"] == {"Ref": alert_topic(default_stack)}
    before, after = warning(HELD, "<end>", "12 hours").split("<end>")
    assert target["Input"] == {
        "Fn::Join": ["", [before, {"Fn::GetAtt": [lookup, "EndDate"]}, after]]
    }
    assert after.startswith(", in about 12 hours. EC2 terminates its instances from 30 minutes before the end; ")
    assert after.endswith("Checkpoint your training now: what is not on the shared file system or in S3 is "
                          "lost with the instances.")
    role = target["RoleArn"]["Fn::GetAtt"][0]
    # Scheduler hands an undeliverable notice to the dead-letter queue with the same role.
    assert role_statements(default_stack, role) == [
        *publish_only(default_stack),
        {"Action": "sqs:SendMessage", "Effect": "Allow",
         "Resource": {"Fn::GetAtt": [dead_letters(default_stack), "Arn"]}},
    ]  # fmt: skip
    trust = default_stack.template_json["Resources"][role]["Properties"]
    assert trust["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}},
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
        }
    ]


# --- undeliverable warnings: dead-letter queue and its alarm ------------------------------------


@pytest.mark.parametrize("variant", ["default", "purchase-confirmed"])
def test_both_warnings_fall_back_to_an_encrypted_dead_letter_queue_within_30_minutes(variant):
    synthesized = synth_variant(variant)
    queue = dead_letters(synthesized)
    resources = synthesized.template_json["Resources"]
    properties = resources[queue]["Properties"]
    assert properties["KmsMasterKeyId"] == {"Fn::GetAtt": [alert_key(synthesized), "Arn"]}
    assert properties["MessageRetentionPeriod"] == 14 * 24 * 3600
    (rule_target,) = expiry_rule(synthesized)["Properties"]["Targets"]
    schedule = synthesized.template_json["Resources"][named(synthesized, "AWS::Scheduler::Schedule", "CapacityExpiryEndNotice")]
    schedule_target = schedule["Properties"]["Target"]
    for target in (rule_target, schedule_target):
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] == 30 * 60


def test_only_the_warning_rule_may_send_to_the_queue_and_only_over_tls(default_stack):
    queue, rule = dead_letters(default_stack), named(default_stack, "AWS::Events::Rule", "CapacityExpiry")
    (policy,) = [
        resource["Properties"]
        for resource in resources_of(default_stack, "AWS::SQS::QueuePolicy").values()
        if resource["Properties"]["Queues"] == [{"Ref": queue}]
    ]
    deny_plain, allow_rule = policy["PolicyDocument"]["Statement"]
    assert deny_plain["Effect"] == "Deny" and deny_plain["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }
    assert allow_rule["Action"] == "sqs:SendMessage"
    assert allow_rule["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow_rule["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule, "Arn"]}}}


def test_eventbridge_may_use_the_alert_key_for_the_queue_in_this_account_only(default_stack):
    key = default_stack.template_json["Resources"][alert_key(default_stack)]
    assert {
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}},
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Resource": "*",
    } in key["Properties"]["KeyPolicy"]["Statement"]


def test_a_message_in_the_dead_letter_queue_alarms_the_alert_topic(default_stack):
    queue, topic = dead_letters(default_stack), alert_topic(default_stack)
    default_stack.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "TrnClusterStackInfra-capacity-end-warning-undelivered",
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}],
            "Statistic": "Maximum",
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
            "EvaluationPeriods": 1,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": topic}],
            "OKActions": [{"Ref": topic}],
        },
    )
