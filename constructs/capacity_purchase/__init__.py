"""Capacity Block purchase: the custom resource around ``handler/index.py``, whose docstring is the
contract (selection rule, safety rules, properties and attributes).

Keep this construct's id and its place in the stack forever: the custom resource's logical id is
one of the tags that tie a bought block to it. A new logical id is a new resource, which finds no
block of its own and buys another, while the old block stays billed until its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from aws_cdk import CustomResource, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import CapacityConfig, CapacityPurchaseConfig
from trn_constructs.findings import acknowledge, acknowledge_checkov, wildcard_finding
from trn_constructs.handlers import handler_code, handler_function, provider

HERE = Path(__file__).resolve().parent
RESOURCE_TYPE = "Custom::CapacityBlockPurchase"
INSTANCE_PLATFORM = "Linux/UNIX"
# One on_event run adopts, searches and buys; throttled purchases back off for about a minute.
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
        code = handler_code(HERE / "handler")
        on_event = handler_function(
            self,
            "OnEvent",
            code=code,
            entry_point="on_event",
            timeout=ON_EVENT_TIMEOUT,
            description="Capacity Block purchase: adopt, search, and (confirmed) buy",
            log_retention=log_retention,
            # The Provider framework may invoke on_event again while a run is under way; two
            # concurrent runs could both find no block and both buy one.
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

    def _grant(self, on_event: lambda_.Function, is_complete: lambda_.Function) -> None:
        """Describe and buy Capacity Blocks, tag them while buying; nothing more."""
        stack = Stack.of(self)
        reservations = stack.format_arn(
            service="ec2", resource="capacity-reservation", resource_name="*"
        )
        for statement in (
            iam.PolicyStatement(
                actions=[
                    "ec2:DescribeCapacityBlockOfferings",
                    "ec2:DescribeCapacityReservations",
                    "ec2:PurchaseCapacityBlock",
                ],
                resources=["*"],
            ),
            # Tag-on-create only: the tags are set in the purchase call itself.
            iam.PolicyStatement(
                actions=["ec2:CreateTags"],
                resources=[reservations],
                conditions={"StringEquals": {"ec2:CreateAction": "PurchaseCapacityBlock"}},
            ),
        ):
            on_event.add_to_role_policy(statement)
        is_complete.add_to_role_policy(
            iam.PolicyStatement(actions=["ec2:DescribeCapacityReservations"], resources=["*"])
        )
        acknowledge(
            on_event,
            "AwsSolutions-IAM5[Resource::*]",
            "DescribeCapacityBlockOfferings and DescribeCapacityReservations have no resource-level "
            "permissions, and PurchaseCapacityBlock creates the reservation a resource would name",
        )
        acknowledge_checkov(
            on_event.role.node.find_child("DefaultPolicy"),
            "CKV_AWS_111",
            "The one write on all resources is PurchaseCapacityBlock, whose reservation does not "
            "exist before the call; the handler buys only under the configured cap, once",
        )
        acknowledge(
            on_event,
            wildcard_finding(self, reservations),
            "CreateTags is limited by condition to tagging the reservation PurchaseCapacityBlock "
            "creates, whose id is unknown until then",
        )
        acknowledge(
            is_complete,
            "AwsSolutions-IAM5[Resource::*]",
            "DescribeCapacityReservations has no resource-level permissions; it only reads the "
            "state of the block on_event bought",
        )
