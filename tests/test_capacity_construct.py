"""The Capacity Block purchase in the stack: its properties, the handler's limits and rights, the
stable logical id, and what a dry run deploys (only the offering report) versus a confirmed one."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from aws_cdk import App, Duration, Stack
from aws_cdk.assertions import Match
from cfnlint.api import ManualArgs, lint
from aws_cdk.aws_logs import RetentionDays

from tests.capacity.templates import (
    PURCHASE_LOGICAL_ID,
    function_named,
    function_role,
    only,
    resources_of,
    role_statements,
)
from tests.conftest import VARIANTS, synth, synth_variant
from stacks.infra_stack import DRY_RUN_NOTE
from trn_constructs.capacity_purchase.construct import HANDLER_DIR, ON_EVENT_TIMEOUT
from trn_constructs.capacity_purchase.handler.capacity_block.adoption import LISTING_WAIT
from trn_constructs.capacity_purchase.handler.capacity_block.aws import RECORDS_TABLE_VARIABLE
from trn_constructs.capacity_purchase.handler.capacity_block.records import (
    LOGICAL_ID_KEY,
    STACK_ID_KEY,
)
from trn_constructs.handlers import handler_code, handler_function

RESOURCE_TYPE = "Custom::CapacityBlockPurchase"


@pytest.fixture(scope="module")
def dry_run():
    return synth_variant("purchase-dry-run")


@pytest.fixture(scope="module")
def confirmed():
    return synth_variant("purchase-confirmed")


@pytest.fixture(scope="module")
def bought_ahead():
    """Confirmed at a synth time before the window opens: the block cannot have started."""
    soon = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=7)
    return synth(
        **VARIANTS["purchase-confirmed"]
        | {
            "capacityPurchaseEarliestStart": soon.isoformat(),
            "capacityPurchaseLatestStart": (soon + timedelta(days=2)).isoformat(),
        }
    )


def purchase_of(synthesized) -> dict:
    return only(synthesized, RESOURCE_TYPE)[1]


def test_dry_run_properties_describe_an_ultraserver_block_and_buy_nothing(dry_run):
    properties = dict(purchase_of(dry_run)["Properties"])
    properties.pop("ServiceToken")
    assert properties == {
        "InstanceType": "trn3.48xlarge",
        "InstanceCount": "4",
        "UltraserverType": "u-trn3x64",
        "UltraserverCount": "1",
        "CapacityDurationHours": "168",
        "EarliestStart": "2026-12-01T00:00:00Z",
        "LatestStart": "2026-12-15T00:00:00Z",
        # Always the configured AZ: the cluster's subnet is built there.
        "AvailabilityZone": "us-east-2b",
        "MaxUpfrontFeeUsd": "250000",
        "ConfirmPurchase": "false",
        "InstancePlatform": "Linux/UNIX",
        "Tags": [{"Key": "project", "Value": "trn-cluster"}],
        "StackName": "TrnClusterStackInfra",
    }


def test_confirmed_instance_level_purchase_has_no_ultraserver_properties(confirmed):
    properties = purchase_of(confirmed)["Properties"]
    assert properties["ConfirmPurchase"] == "true"
    assert (properties["InstanceType"], properties["InstanceCount"]) == ("trn2.48xlarge", "2")
    assert properties["CapacityDurationHours"] == "24"
    assert properties["MaxUpfrontFeeUsd"] == "20000"
    assert not {"UltraserverType", "UltraserverCount"} & set(properties)


def test_logical_id_is_the_same_in_dry_run_and_confirmed_stacks(dry_run, confirmed):
    # Confirming after a dry run must update the same resource, never add another one.
    assert list(resources_of(dry_run, RESOURCE_TYPE)) == [PURCHASE_LOGICAL_ID]
    assert list(resources_of(confirmed, RESOURCE_TYPE)) == [PURCHASE_LOGICAL_ID]


def test_existing_block_stack_buys_nothing(default_stack):
    assert resources_of(default_stack, RESOURCE_TYPE) == {}
    assert not any(
        "PurchaseCapacityBlock" in json.dumps(policy)
        for policy in resources_of(default_stack, "AWS::IAM::Policy").values()
    )


def test_on_event_runs_one_at_a_time(dry_run):
    on_event = function_named(dry_run, "Capacity Block purchase: adopt")
    assert on_event["Handler"] == "index.on_event"
    assert on_event["ReservedConcurrentExecutions"] == 1
    assert on_event["Timeout"] == 300
    assert on_event["Runtime"] == "python3.14"
    is_complete = function_named(dry_run, "Capacity Block purchase: wait")
    assert is_complete["Handler"] == "index.is_complete"
    assert is_complete["Timeout"] == 60


def test_provider_polls_each_minute_and_gives_up_inside_cloudformations_hour(dry_run):
    (machine,) = [
        resource
        for name, resource in resources_of(dry_run, "AWS::StepFunctions::StateMachine").items()
        if name.startswith("CapacityPurchaseProvider")
    ]
    definition = "".join(
        part for part in machine["Properties"]["DefinitionString"]["Fn::Join"][1]
        if isinstance(part, str)
    )
    assert '"IntervalSeconds":60,"MaxAttempts":55' in definition
    # No ServiceTimeout: CloudFormation's default wait, one hour, is also its maximum.
    assert "ServiceTimeout" not in purchase_of(dry_run)["Properties"]


def files_below(directory) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_asset_holds_only_the_handlers_modules(dry_run):
    key = function_named(dry_run, "Capacity Block purchase: adopt")["Code"]["S3Key"]
    bundled = files_below(dry_run.outdir / f"asset.{key.removesuffix('.zip')}")
    assert bundled == sorted(
        p.relative_to(HANDLER_DIR).as_posix() for p in HANDLER_DIR.rglob("*.py")
    )
    assert {"index.py", "capacity_block/lifecycle.py"} <= set(bundled)


DESCRIBE = ["ec2:DescribeCapacityBlockOfferings", "ec2:DescribeCapacityReservations"]
RECORDS = "CapacityPurchaseRecords0B56D99C"
RECORDS_ARN = {"Fn::GetAtt": [RECORDS, "Arn"]}


def on_event_statements(synthesized) -> list[dict]:
    return role_statements(
        synthesized, function_role(function_named(synthesized, "Capacity Block purchase: adopt"))
    )


def test_a_dry_run_may_describe_and_read_its_record_but_neither_buy_nor_tag(dry_run):
    assert on_event_statements(dry_run) == [
        {"Action": DESCRIBE, "Effect": "Allow", "Resource": "*"},
        {"Action": "dynamodb:GetItem", "Effect": "Allow", "Resource": RECORDS_ARN},
    ]
    policies = json.dumps(dry_run.template.find_resources("AWS::IAM::Policy"))
    for absent in ("ec2:PurchaseCapacityBlock", "ec2:CreateTags", "dynamodb:PutItem"):
        assert absent not in policies


def test_confirmed_may_also_buy_tag_on_purchase_only_and_write_its_record(confirmed):
    assert on_event_statements(confirmed) == [
        {"Action": [*DESCRIBE, "ec2:PurchaseCapacityBlock"], "Effect": "Allow", "Resource": "*"},
        {"Action": "dynamodb:GetItem", "Effect": "Allow", "Resource": RECORDS_ARN},
        {
            "Action": "ec2:CreateTags",
            "Condition": {"StringEquals": {"ec2:CreateAction": "PurchaseCapacityBlock"}},
            "Effect": "Allow",
            "Resource": "arn:aws:ec2:us-east-2:123456789012:capacity-reservation/*",
        },
        {
            "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"],
            "Effect": "Allow",
            "Resource": RECORDS_ARN,
        },
    ]


@pytest.mark.parametrize("variant", ["purchase-dry-run", "purchase-confirmed"])
def test_purchase_records_outlive_the_stack_and_nothing_may_delete_one(variant):
    template = synth_variant(variant).template
    template.has_resource(
        "AWS::DynamoDB::Table",
        {
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "KeySchema": [
                        {"AttributeName": STACK_ID_KEY, "KeyType": "HASH"},
                        {"AttributeName": LOGICAL_ID_KEY, "KeyType": "RANGE"},
                    ],
                    "BillingMode": "PAY_PER_REQUEST",
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                    "SSESpecification": {"SSEEnabled": True},
                    "DeletionProtectionEnabled": True,
                }
            ),
        },
    )
    assert list(template.find_resources("AWS::DynamoDB::Table")) == [RECORDS]
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "index.on_event",
            "Environment": {"Variables": {RECORDS_TABLE_VARIABLE: {"Ref": RECORDS}}},
        },
    )
    policies = json.dumps(template.find_resources("AWS::IAM::Policy"))
    assert "dynamodb:DeleteItem" not in policies and "dynamodb:*" not in policies


def test_on_event_has_time_to_wait_for_a_recorded_blocks_listing():
    assert ON_EVENT_TIMEOUT.to_seconds() >= LISTING_WAIT.total_seconds() + 60


def test_is_complete_may_only_read_reservations(dry_run):
    is_complete = function_named(dry_run, "Capacity Block purchase: wait")
    assert role_statements(dry_run, function_role(is_complete)) == [
        {"Action": "ec2:DescribeCapacityReservations", "Effect": "Allow", "Resource": "*"}
    ]


def test_only_the_purchase_handler_may_buy(confirmed):
    buyers = [
        name
        for name, policy in resources_of(confirmed, "AWS::IAM::Policy").items()
        if "ec2:PurchaseCapacityBlock" in json.dumps(policy)
    ]
    assert len(buyers) == 1 and buyers[0].startswith("CapacityPurchaseOnEvent")


def test_dry_run_deploys_only_the_offering_report(dry_run):
    types = {resource["Type"] for resource in dry_run.template_json["Resources"].values()}
    for absent in (
        "AWS::EC2::VPC",
        "AWS::FSx::FileSystem",
        "Custom::PclusterCluster",
        "Custom::TrnHandover",
        "AWS::S3::Bucket",
        "AWS::Events::Rule",
        "AWS::Scheduler::Schedule",
    ):
        assert absent not in types
    assert {RESOURCE_TYPE, "AWS::SNS::Topic"} <= types
    outputs = dry_run.infra_json["Outputs"]
    assert set(outputs) == {
        "AlertTopicArn",
        "CapacityPurchaseSummary",
        "CapacityPurchaseMode",
        "CapacityBlockStartDate",
        "CapacityBlockEndDate",
        "ClusterNotDeployed",
    }
    assert outputs["ClusterNotDeployed"]["Value"] == DRY_RUN_NOTE
    assert DRY_RUN_NOTE.startswith("DRY RUN: this deployment buys nothing and holds no cluster")
    assert outputs["CapacityPurchaseSummary"]["Value"] == {
        "Fn::GetAtt": [PURCHASE_LOGICAL_ID, "Summary"]
    }
    assert outputs["CapacityBlockEndDate"]["Value"] == {
        "Fn::GetAtt": [PURCHASE_LOGICAL_ID, "EndDate"]
    }
    assert dry_run.infra_json["Description"].endswith(
        " - no cluster yet: Capacity Block purchase only"
    )


def test_confirmed_block_feeds_the_orchestrator_gate_and_outputs(confirmed):
    reservation = {"Fn::GetAtt": [PURCHASE_LOGICAL_ID, "CapacityReservationId"]}
    launch_data = [
        resource["Properties"]["LaunchTemplateData"]
        for resource in resources_of(confirmed, "AWS::EC2::LaunchTemplate").values()
        if "CapacityReservationSpecification" in resource["Properties"]["LaunchTemplateData"]
    ]
    assert [data["CapacityReservationSpecification"] for data in launch_data] == [
        {"CapacityReservationTarget": {"CapacityReservationId": reservation}}
    ]
    (gate,) = resources_of(confirmed, "Custom::TrnHandover").values()
    assert gate["Properties"]["ReservationId"] == reservation
    outputs = {k: v for k, v in confirmed.template_json["Outputs"].items() if not k.startswith("PublishOutput")}
    assert outputs["CapacityReservationId"]["Value"] == reservation
    assert outputs["CapacityPurchaseMode"]["Value"] == {"Fn::GetAtt": [PURCHASE_LOGICAL_ID, "Mode"]}
    assert "ClusterNotDeployed" not in outputs
    assert all(output.get("Description") for output in outputs.values())


def test_handler_assets_leave_interpreter_caches_out(tmp_path):
    source = tmp_path / "handler"
    for caches in (source / "__pycache__", source / "package" / "__pycache__"):
        caches.mkdir(parents=True)
        (caches / "module.cpython-314.pyc").write_bytes(b"\0")
    (source / "index.py").write_text("def on_event(event, context):\n    return {}\n")
    (source / "package" / "module.py").write_text("")
    app = App(outdir=str(tmp_path / "out"))
    handler_function(
        Stack(app, "Handlers"),
        "Handler",
        code=handler_code(source),
        entry_point="on_event",
        timeout=Duration.seconds(10),
        description="cache test",
        log_retention=RetentionDays.ONE_DAY,
    )
    app.synth()
    (asset,) = (tmp_path / "out").glob("asset.*")
    assert files_below(asset) == ["index.py", "package/module.py"]


def test_a_block_bought_ahead_stages_the_whole_cluster_the_same_as_after_its_start(bought_ahead, confirmed):
    # Deployed before the block starts, everything but the Trainium instances comes up (the EKS
    # node group waits at 0) and the handover is armed for the block's start: the same resources
    # as a deployment after the start, so nothing changes when the block begins.
    assert purchase_of(bought_ahead)["Properties"]["ConfirmPurchase"] == "true"
    for synthesized in (bought_ahead, confirmed):
        types = {resource["Type"] for resource in synthesized.template_json["Resources"].values()}
        assert {"AWS::EC2::VPC", "AWS::FSx::FileSystem", "AWS::EKS::Nodegroup", "Custom::TrnHandover"} <= types
    assert {k: v["Type"] for k, v in bought_ahead.template_json["Resources"].items()} == {
        k: v["Type"] for k, v in confirmed.template_json["Resources"].items()}
    assert "ClusterNotDeployed" not in bought_ahead.template_json["Outputs"]


def test_a_block_bought_ahead_is_nag_and_lint_clean(bought_ahead):
    # Not a snapshot variant: its dates follow the clock.
    report = bought_ahead.validation_report()
    assert [v for plugin in report["pluginReports"] for v in plugin["violations"]] == []
    for template in (bought_ahead.infra_json, bought_ahead.handover_json):
        matches = lint(json.dumps(template), config=ManualArgs(regions=["us-east-2"]))
        assert [m.rule.id for m in matches if m.rule.id.startswith("E")] == []
