"""Capacity Block purchase: the custom resource around ``handler/``, whose package docstring
(handler/capacity_block/__init__.py) is the contract (selection rule, safety rules, properties and
attributes).

Keep this construct's id and its place in the stack forever: the custom resource's logical id is
one of the tags that tie a bought block to it. A new logical id is a new resource, which finds no
block of its own and buys another, while the old block stays billed until its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from aws_cdk import CustomResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from trn_constructs.capacity import CapacityTarget
from trn_constructs.capacity_purchase.handler.capacity_block.aws import RECORDS_TABLE_VARIABLE
from trn_constructs.capacity_purchase.handler.capacity_block.records import (
    LOGICAL_ID_KEY,
    STACK_ID_KEY,
)
from trn_constructs.config import CapacityConfig, CapacityPurchaseConfig
from trn_constructs.findings import acknowledge, acknowledge_checkov, wildcard_finding
from trn_constructs.handlers import handler_code, handler_function, provider

HANDLER_DIR = Path(__file__).resolve().parent / "handler"
RESOURCE_TYPE = "Custom::CapacityBlockPurchase"
INSTANCE_PLATFORM = "Linux/UNIX"
# One on_event run adopts, searches and buys (throttled purchases back off for about half a
# minute), or waits up to the handler's LISTING_WAIT (3 minutes) for a recorded block's listing.
ON_EVENT_TIMEOUT = Duration.minutes(5)
IS_COMPLETE_TIMEOUT = Duration.minutes(1)
POLL_INTERVAL = Duration.minutes(1)
# CloudFormation waits at most an hour (its default) for a custom resource; the Provider's own
# deadline comes first, so its message names what it was waiting for.
PROVIDER_TIMEOUT = Duration.minutes(55)


def _utc(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def search_properties(
    purchase: CapacityPurchaseConfig, capacity: CapacityConfig, availability_zone: str
) -> dict[str, str]:
    """What to search for, in the handler's property names (the offering search command reuses
    them). The AZ is always the configured one: the cluster's subnet is built there at synth time,
    so a block in any other AZ could not be used."""
    spec = capacity.instance
    properties = {
        "InstanceType": spec.instance_type,
        "InstanceCount": str(capacity.instance_count),
        "CapacityDurationHours": str(purchase.duration_hours),
        "EarliestStart": _utc(purchase.earliest_start),
        "LatestStart": _utc(purchase.latest_start),
        "AvailabilityZone": availability_zone,
    }
    if spec.is_ultraserver:
        # UltraServer blocks are sold in whole UltraServers; instanceCount already fills them.
        properties["UltraserverType"] = spec.ultraserver_type
        properties["UltraserverCount"] = str(capacity.ultraserver_count)
    return properties


class CapacityBlockPurchase(Construct):
    """Finds the Capacity Block offering the configuration describes; buys it only if confirmed.

    Attributes (deploy-time strings from the custom resource):
        reservation_id: the bought or adopted block's id; empty in a dry run.
        summary: one line saying what was bought, adopted or (dry run) would be bought, and for
            how much.
        mode: "dry-run", "purchased" or "adopted".
        start_date, end_date: the block's (or, dry run, the offering's) UTC times, ISO-8601.
        upfront_fee: in USD.
        confirmed: whether this purchase may buy (False: dry run, no block to launch into).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        purchase: CapacityPurchaseConfig,
        capacity: CapacityConfig,
        availability_zone: str,
        tags: Mapping[str, str],
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self._capacity = capacity
        self._availability_zone = availability_zone
        self.confirmed = purchase.confirm
        self.records = self._records_table()
        code = handler_code(HANDLER_DIR)
        on_event = handler_function(
            self,
            "OnEvent",
            code=code,
            entry_point="on_event",
            timeout=ON_EVENT_TIMEOUT,
            description="Capacity Block purchase: adopt, search, and (confirmed) buy",
            log_retention=log_retention,
            environment={RECORDS_TABLE_VARIABLE: self.records.table_name},
            # The Provider framework may invoke on_event again while a run is under way; of two
            # concurrent runs the record lets only one buy, and the other would fail.
            reserved_concurrent_executions=1,
        )
        is_complete = handler_function(
            self,
            "IsComplete",
            code=code,
            entry_point="is_complete",
            timeout=IS_COMPLETE_TIMEOUT,
            description="Capacity Block purchase: wait for the payment to go through",
            log_retention=log_retention,
        )
        self._grant(on_event, is_complete)
        framework = provider(
            self,
            "Provider",
            on_event_handler=on_event,
            is_complete_handler=is_complete,
            log_retention=log_retention,
            query_interval=POLL_INTERVAL,
            total_timeout=PROVIDER_TIMEOUT,
        )
        resource = CustomResource(
            self,
            "Resource",
            service_token=framework.service_token,
            resource_type=RESOURCE_TYPE,
            properties={
                **search_properties(purchase, capacity, availability_zone),
                "MaxUpfrontFeeUsd": str(purchase.max_upfront_fee_usd),
                "ConfirmPurchase": "true" if purchase.confirm else "false",
                "InstancePlatform": INSTANCE_PLATFORM,
                "Tags": [{"Key": key, "Value": value} for key, value in sorted(tags.items())],
                "StackName": Stack.of(self).stack_name,
            },
        )
        self.reservation_id = resource.get_att_string("CapacityReservationId")
        self.summary = resource.get_att_string("Summary")
        self.mode = resource.get_att_string("Mode")
        self.start_date = resource.get_att_string("StartDate")
        self.end_date = resource.get_att_string("EndDate")
        self.upfront_fee = resource.get_att_string("UpfrontFee")

    @property
    def target(self) -> CapacityTarget:
        """The bought (or adopted) block, for the orchestrators; a dry run holds none."""
        if not self.confirmed:
            raise ValueError("a dry-run capacity purchase holds no Capacity Block to launch into")
        return CapacityTarget(
            reservation_id=self.reservation_id,
            availability_zone=self._availability_zone,
            instance=self._capacity.instance,
            instance_count=self._capacity.instance_count,
        )

    def _records_table(self) -> dynamodb.Table:
        """The purchase records (the handler's records.py). Retained and protected from deletion:
        a block bought stays billed after the stack is gone, and so does the record of it. Never
        change its key: a replacement would be a new, empty table."""
        table = dynamodb.Table(
            self,
            "Records",
            partition_key=dynamodb.Attribute(
                name=STACK_ID_KEY, type=dynamodb.AttributeType.STRING
            ),
            sort_key=dynamodb.Attribute(name=LOGICAL_ID_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge_checkov(
            table,
            "CKV_AWS_119",
            "It holds reservation ids, stack ids and times, nothing secret, encrypted at rest with "
            "DynamoDB's AWS managed key; a customer managed key would have to be retained with "
            "the table, billed every month after the stack is gone, to protect nothing more",
        )
        return table

    def _grant(self, on_event: lambda_.Function, is_complete: lambda_.Function) -> None:
        """Describe Capacity Blocks and read the purchase record; only when confirmed, buy, tag
        while buying and write the record. Nothing may delete a record."""
        buying = ["ec2:PurchaseCapacityBlock"] if self.confirmed else []
        on_event.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:DescribeCapacityBlockOfferings",
                    "ec2:DescribeCapacityReservations",
                    *buying,
                ],
                resources=["*"],
            )
        )
        acknowledge(
            on_event,
            "AwsSolutions-IAM5[Resource::*]",
            "DescribeCapacityBlockOfferings and DescribeCapacityReservations have no "
            "resource-level permissions, and PurchaseCapacityBlock (granted only when confirmed) "
            "creates the reservation a resource would name",
        )
        self.records.grant(on_event, "dynamodb:GetItem")
        if self.confirmed:
            acknowledge_checkov(
                on_event.role.node.find_child("DefaultPolicy"),
                "CKV_AWS_111",
                "The one write on all resources is PurchaseCapacityBlock, whose reservation does "
                "not exist before the call; the handler buys only under the configured cap, once",
            )
            self._grant_tagging_on_purchase(on_event)
            self.records.grant(on_event, "dynamodb:PutItem", "dynamodb:UpdateItem")
        is_complete.add_to_role_policy(
            iam.PolicyStatement(actions=["ec2:DescribeCapacityReservations"], resources=["*"])
        )
        acknowledge(
            is_complete,
            "AwsSolutions-IAM5[Resource::*]",
            "DescribeCapacityReservations has no resource-level permissions; it only reads the "
            "state of the block on_event bought",
        )

    def _grant_tagging_on_purchase(self, on_event: lambda_.Function) -> None:
        """Tag-on-create only: the tags are set in the purchase call itself."""
        reservations = Stack.of(self).format_arn(
            service="ec2", resource="capacity-reservation", resource_name="*"
        )
        on_event.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ec2:CreateTags"],
                resources=[reservations],
                conditions={"StringEquals": {"ec2:CreateAction": "PurchaseCapacityBlock"}},
            )
        )
        acknowledge(
            on_event,
            wildcard_finding(self, reservations),
            "CreateTags is limited by condition to tagging the reservation PurchaseCapacityBlock "
            "creates, whose id is unknown until then",
        )
