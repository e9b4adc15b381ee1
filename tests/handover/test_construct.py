"""The handover as CloudFormation sees it: in its own stack on top of the infrastructure, its
gate, workflow, triggers and exactly the permissions each orchestrator's node operations need."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CDK_CONTEXT, synth, synth_variant
from tests.support.manifests import bundled_plan
from trn_constructs.config import ConfigError, parse_config

INFRA_ONLY = ("AWS::EC2::VPC", "AWS::FSx::FileSystem", "Custom::PclusterCluster", "AWS::EKS::Cluster",
              "AWS::EKS::Nodegroup", "AWS::EC2::LaunchTemplate", "Custom::CapacityBlockPurchase", "AWS::S3::Bucket",
              "AWS::SNS::Topic", "AWS::CloudFormation::Stack")


@pytest.fixture(scope="module")
def slurm():
    return synth_variant("default")


@pytest.fixture(scope="module")
def eks():
    return synth_variant("eks")


def resources(template_json: dict, resource_type: str) -> dict[str, dict]:
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == resource_type}


def only(template_json: dict, resource_type: str, prefix: str = "") -> tuple[str, dict]:
    (found,) = [(k, v) for k, v in resources(template_json, resource_type).items() if k.startswith(prefix)]
    return found


def statements_of(template_json: dict, role_prefix: str) -> list[dict]:
    return [s for name, policy in resources(template_json, "AWS::IAM::Policy").items() if name.startswith(role_prefix)
            for s in policy["Properties"]["PolicyDocument"]["Statement"]]


@pytest.mark.parametrize("variant", ["default", "eks", "purchase-confirmed"])
def test_a_failed_handover_can_only_roll_back_its_own_stack(variant):
    # The handover, its workflow and the operations live in TrnClusterStack; nothing it holds is
    # infrastructure, and the infrastructure never refers to it, so a rollback (or a delete) of
    # TrnClusterStack leaves the network, storage, orchestrator and nodes as they are.
    synthesized = synth_variant(variant)
    types = {r["Type"] for r in synthesized.handover_json["Resources"].values()}
    assert types.isdisjoint(INFRA_ONLY)
    assert "Custom::TrnHandover" not in {r["Type"] for r in synthesized.infra_json["Resources"].values()}
    assert "Fn::GetStackOutput" not in json.dumps(synthesized.infra_json)
    manifest = json.loads((synthesized.outdir / "manifest.json").read_text())
    assert "TrnClusterStackInfra" in manifest["artifacts"]["TrnClusterStack"]["dependencies"]
    # References across the two stacks are weak (Fn::GetStackOutput): no export can lock the
    # infrastructure against a change.
    assert "Fn::ImportValue" not in json.dumps(synthesized.handover_json)
    assert "Export" not in json.dumps(synthesized.infra_json.get("Outputs", {}))


def test_the_gate_is_a_new_handover_whenever_what_it_judges_changes(slurm):
    _, gate = only(slurm.handover_json, "Custom::TrnHandover")
    properties = gate["Properties"]
    assert set(properties) == {"ServiceToken", "ServiceTimeout", "ReservationId", "Nodes", "Handover"}
    assert properties["ReservationId"] == "cr-0123456789abcdef0"
    assert int(properties["ServiceTimeout"]) <= 3600
    longer = synth(burnInDurationSeconds=300)
    _, changed = only(longer.handover_json, "Custom::TrnHandover")
    assert changed["Properties"]["Handover"] != properties["Handover"]
    # A setting that changes nothing about the nodes or their judging is no new handover.
    faster_fsx = synth(fsxThroughputMBpsPerTiB=500)
    _, same = only(faster_fsx.handover_json, "Custom::TrnHandover")
    assert {k: v for k, v in same["Properties"].items() if k != "ServiceToken"} == {
        k: v for k, v in properties.items() if k != "ServiceToken"}


def test_the_workflow_polls_until_its_verdict_retries_and_reports_errors(slurm):
    name, machine = only(slurm.handover_json, "AWS::StepFunctions::StateMachine", "HandoverWorkflow")
    assert machine["Properties"]["StateMachineName"] == "TrnClusterStack-handover"
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    definition = json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))
    states = definition["States"]
    assert definition["StartAt"] == "Poll"
    assert states["Poll"]["Next"] == "Done?" and states["Wait"]["SecondsPath"] == "$.wait_seconds"
    assert states["Poll"]["Retry"][-1] == {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 20, "MaxAttempts": 6,
                                           "BackoffRate": 2}
    assert states["Poll"]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "ReportError"}]
    assert states["ReportError"]["Next"] == "HandoverError" and states["HandoverError"]["Type"] == "Fail"
    # Its own budget, a block not started yet, retries: never cut off inside the handover's time.
    assert definition["TimeoutSeconds"] == (55 + 60) * 60


def test_the_handover_starts_at_the_blocks_start_by_event_and_by_schedule(slurm):
    _, gate = only(slurm.handover_json, "Custom::TrnHandover")
    rules = {k: v for k, v in resources(slurm.handover_json, "AWS::Events::Rule").items()}
    (start,) = [r for k, r in rules.items() if k.startswith("HandoverAtBlockStart")]
    pattern = start["Properties"]["EventPattern"]
    assert pattern == {"source": ["aws.ec2"], "detail": {"capacity-reservation-id": ["cr-0123456789abcdef0"]},
                       "detail-type": ["Capacity Block Delivered", "Capacity Block Reservation Delivered"]}
    (target,) = start["Properties"]["Targets"]
    assert json.loads(target["Input"]) == {"trigger": "block-start"}
    _, schedule = only(slurm.handover_json, "AWS::Scheduler::Schedule", "HandoverAfterBlockStart")
    gate_id = next(iter(resources(slurm.handover_json, "Custom::TrnHandover")))
    assert schedule["Properties"]["ScheduleExpression"] == {"Fn::GetAtt": [gate_id, "StartSchedule"]}
    # Armed only by a deploy that found the block not yet started.
    assert schedule["Properties"]["State"] == {"Fn::GetAtt": [gate_id, "StartScheduleState"]}
    assert json.loads(schedule["Properties"]["Target"]["Input"]) == {"trigger": "block-start"}


def test_new_work_stops_at_ec2s_expiration_warning(slurm):
    (stop,) = [r for k, r in resources(slurm.handover_json, "AWS::Events::Rule").items()
               if k.startswith("HandoverBeforeBlockEnd")]
    assert stop["Properties"]["EventPattern"]["detail-type"] == [
        "Capacity Block Expiration Warning", "Capacity Block Reservation Expiration Warning"]
    (target,) = stop["Properties"]["Targets"]
    assert target["Arn"]["Fn::GetAtt"][0].startswith("HandoverStopNewWork")
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 900, "MaximumRetryAttempts": 3}


def test_a_start_or_stop_that_cannot_be_delivered_alarms_the_alert_topic(slurm):
    template = slurm.handover_json
    queue, body = only(template, "AWS::SQS::Queue", "HandoverUndelivered")
    # Encrypted with the alert topic's key, from the infrastructure stack.
    alert_key, _ = only(slurm.infra_json, "AWS::KMS::Key", "AlertsKey")
    assert slurm.template_json["Resources"][queue]["Properties"]["KmsMasterKeyId"] == {
        "Fn::GetAtt": [alert_key, "Arn"]}
    dead_letter = {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}
    rules = resources(template, "AWS::Events::Rule")
    for prefix in ("HandoverAtBlockStart", "HandoverBeforeBlockEnd"):
        ((target,),) = [r["Properties"]["Targets"] for k, r in rules.items() if k.startswith(prefix)]
        assert target["DeadLetterConfig"] == dead_letter, prefix
    _, schedule = only(template, "AWS::Scheduler::Schedule", "HandoverAfterBlockStart")
    assert schedule["Properties"]["Target"]["DeadLetterConfig"] == dead_letter
    assert schedule["Properties"]["Target"]["RetryPolicy"]["MaximumEventAgeInSeconds"] == 3600
    # A stop that keeps failing after Lambda's own retries lands there too.
    _, stop = only(template, "AWS::Lambda::Function", "HandoverStopNewWork")
    assert stop["Properties"]["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": [queue, "Arn"]}}
    _, alarm = only(template, "AWS::CloudWatch::Alarm", "HandoverUndelivered")
    assert alarm["Properties"]["AlarmName"] == "TrnClusterStack-handover-trigger-undelivered"
    assert alarm["Properties"]["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
    topic, _ = only(slurm.infra_json, "AWS::SNS::Topic", "AlertsTopic")
    merged = slurm.template_json["Resources"][only(template, "AWS::CloudWatch::Alarm", "HandoverUndelivered")[0]]
    assert merged["Properties"]["AlarmActions"] == merged["Properties"]["OKActions"] == [{"Ref": topic}]


@pytest.mark.parametrize("variant", ["default", "eks"])
def test_a_deploy_before_the_block_starts_asks_for_no_trainium_instance(variant):
    synthesized = synth_variant(variant)
    template = synthesized.template_json
    # No instance of the kit's own in either stack: Trainium capacity exists only as the
    # orchestrator's, and each holds it until the block is active.
    assert resources(template, "AWS::EC2::Instance") == {}
    assert resources(template, "AWS::AutoScaling::AutoScalingGroup") == {}
    if variant == "eks":
        (group,) = [g for g in resources(template, "AWS::EKS::Nodegroup").values()
                    if g["Properties"].get("CapacityType") == "CAPACITY_BLOCK"]
        assert group["Properties"]["ScalingConfig"]["DesiredSize"] == 0  # the handover scales it at the start
    else:
        (cluster,) = resources(template, "Custom::PclusterCluster").values()
        (queue,) = cluster["Properties"]["ClusterConfiguration"]["Scheduling"]["SlurmQueues"]
        # ParallelCluster keeps CAPACITY_BLOCK static nodes in its reservation until the block is
        # active, and its head node does not wait for them (README, Before the block starts).
        assert queue["CapacityType"] == "CAPACITY_BLOCK"
        assert queue["ComputeResources"][0]["CapacityReservationTarget"] == {
            "CapacityReservationId": "cr-0123456789abcdef0"}
    # The handover's workflow and both of its start triggers are there, waiting.
    handover = synthesized.handover_json
    assert [k for k in resources(handover, "AWS::StepFunctions::StateMachine") if k.startswith("HandoverWorkflow")]
    assert [k for k in resources(handover, "AWS::Events::Rule") if k.startswith("HandoverAtBlockStart")]
    assert [k for k in resources(handover, "AWS::Scheduler::Schedule") if k.startswith("HandoverAfterBlockStart")]


def test_slurm_replacement_and_commands_reach_only_this_clusters_nodes(slurm):
    statements = statements_of(slurm.handover_json, "HandoverAdvanceServiceRole")
    (terminate,) = [s for s in statements if s["Action"] == "ec2:TerminateInstances"]
    assert terminate["Condition"] == {"StringEquals": {
        "ec2:ResourceTag/parallelcluster:cluster-name": "TrnClusterStack-slurm",
        "ec2:ResourceTag/parallelcluster:node-type": "Compute",
    }}
    (to_head_node,) = [s for s in statements if s["Action"] == "ssm:SendCommand" and "Condition" in s]
    assert to_head_node["Condition"] == {"StringEquals": {
        "ssm:resourceTag/parallelcluster:cluster-name": "TrnClusterStack-slurm",
        "ssm:resourceTag/parallelcluster:node-type": "HeadNode",
    }}
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert not {a for a in actions if a.startswith(("autoscaling:", "eks:"))}
    _, advance = only(slurm.handover_json, "AWS::Lambda::Function", "HandoverAdvance")
    assert "VpcConfig" not in advance["Properties"]


def test_eks_scaling_and_replacement_reach_only_the_trainium_node_group(eks):
    statements = statements_of(eks.handover_json, "HandoverAdvanceServiceRole")
    (scale,) = [s for s in statements if "autoscaling:SetDesiredCapacity" in s["Action"]]
    assert sorted(scale["Action"]) == ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    assert scale["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/eks:nodegroup-name": "trainium"}}
    assert not [s for s in statements if s["Action"] in ("ec2:TerminateInstances", "ssm:SendCommand")]
    # The functions reach the cluster's private endpoint from its subnets, as its own security group.
    _, advance = only(eks.handover_json, "AWS::Lambda::Function", "HandoverAdvance")
    assert len(advance["Properties"]["VpcConfig"]["SubnetIds"]) == 2


def test_the_state_parameter_and_the_outputs_say_where_to_look(slurm):
    _, parameter = only(slurm.handover_json, "AWS::SSM::Parameter")
    assert parameter["Properties"]["Name"] == "/trn-kit/TrnClusterStack/handover"
    assert json.loads(parameter["Properties"]["Value"]) == {"state": "not-started"}
    outputs = slurm.handover_json["Outputs"]
    for name in ("HandoverSummary", "HandoverReports", "HandoverStateParameter", "HandoverLogGroup",
                 "HandoverStateMachineArn"):
        assert outputs[name]["Description"]
    log_group = next(k for k in resources(slurm.handover_json, "AWS::Logs::LogGroup") if k.startswith("HandoverAdvanceLogs"))
    assert outputs["HandoverLogGroup"]["Value"] == {"Ref": log_group}
    # Named, so a deploy still waiting for its verdict can be followed before outputs exist.
    group = slurm.handover_json["Resources"][log_group]["Properties"]
    assert group["LogGroupName"] == "/trn-kit/TrnClusterStack/handover"
    assert bundled_plan(slurm.outdir)["log_group"] == "/trn-kit/TrnClusterStack/handover"


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"clusterTest": False}, "clusterTest is false"),
    ({"instanceType": "trn2.48xlarge", "instanceCount": 1}, "a single node has no inter-node path to test"),
])
def test_the_plan_says_why_the_cluster_test_does_not_run(overrides, reason):
    plan = bundled_plan(synth(**overrides).outdir)
    assert (plan["cluster_test"], plan["cluster_test_skipped"]) == (None, reason)


def test_the_plan_carries_the_replacement_and_health_policy():
    plan = bundled_plan(synth(burnInMinHealthyFraction=0.5, burnInMaxReplacements=2, burnInReplaceFailedNodes=False,
                              burnInHealthyUnit="ultraserver").outdir)
    assert (plan["min_healthy_fraction"], plan["max_replacements"], plan["replace_failed_nodes"]) == (0.5, 2, False)
    assert plan["whole_ultraservers"] is True
    assert (plan["expected_nodes"], plan["instances_per_ultraserver"], plan["ultraserver_type"]) == (4, 4, "u-trn3x64")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"burnInDurationSeconds": 3600},
     "setting 'burnInDurationSeconds': got 3600; allowed: at most 660 with burnInTimeoutMinutes=55 on slurm with "
     "the default image: a node needs about 79 minutes from launch to its report (x1.5 margin) and 10 for the "
     "cluster test, 128 minutes in all (raise burnInTimeoutMinutes, at most 55, or shorten burnInDurationSeconds)"),
    ({"burnInTimeoutMinutes": 30},
     "setting 'burnInTimeoutMinutes': got 30; allowed: at least 40 on slurm with the default image, even with "
     "burnInDurationSeconds at its least (30): a node needs about 16 minutes to boot and set up before its "
     "burn-in (x1.5 margin) and 10 for the cluster test"),
    ({"burnInHealthyUnit": "ultraserver", "instanceType": "trn2.48xlarge"},
     "setting 'burnInHealthyUnit': got 'ultraserver'; allowed: node"),
])
def test_budgets_that_cannot_fit_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as raised:
        parse_config({**CDK_CONTEXT, **overrides})
    assert str(raised.value) == message


def test_the_kits_image_leaves_room_a_default_image_does_not():
    assert parse_config({**CDK_CONTEXT, "burnInTimeoutMinutes": 30, "imageSsmParameter": "/trn-kit/ami/slurm"})
