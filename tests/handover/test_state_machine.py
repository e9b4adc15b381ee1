"""The synthesized state machine, run (tests/support/asl.py) with the plan.json the stack bundled,
against the fake cloud: what CloudFormation would deploy is what hands over."""

from __future__ import annotations

import json
import pytest

from tests.conftest import synth_variant
from tests.support.asl import Emulator, ExecutionFailed
from tests.support.cloud import BUCKET, FAIL, PASS, RESERVATION, Cloud
from tests.support.handover import TOPIC, use
from trn_constructs.handover.handler import settings as handler_settings
from trn_constructs.handover.handler import workflow

EXECUTION = "arn:aws:states:us-east-2:123456789012:execution:TrnClusterStack-handover:deploy-1"


def definition_and_functions(synthesized) -> tuple[dict, dict[str, str]]:
    resources = synthesized.handover_json["Resources"]
    (machine,) = [r for name, r in resources.items()
                  if r["Type"] == "AWS::StepFunctions::StateMachine" and name.startswith("HandoverWorkflow")]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else f"lambda:{p['Fn::GetAtt'][0]}" for p in parts)
    functions = {name: r for name, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
    return json.loads(text), functions


def bundled_settings(synthesized) -> handler_settings.Settings:
    (plan,) = {p.read_text() for p in synthesized.outdir.glob("asset.*/handover_handler/plan.json")}
    deploy_time = {"bucket": BUCKET, "reservation_id": RESERVATION, "topic_arn": TOPIC}
    return handler_settings.Settings.from_plan(json.loads(plan), deploy_time)


@pytest.fixture(scope="module")
def slurm():
    return synth_variant("default")


def machine(cloud: Cloud, synthesized, config) -> Emulator:
    definition, functions = definition_and_functions(synthesized)
    (advance,) = [name for name, f in functions.items() if f["Properties"]["Handler"].endswith(".advance")]
    return Emulator(definition, {f"lambda:{advance}": lambda payload: workflow.advance(payload, config)},
                    sleep=cloud.advance)


def test_the_bundled_plan_is_the_configuration(slurm):
    config = bundled_settings(slurm)
    assert (config.orchestrator, config.expected_nodes, config.budget_seconds) == ("slurm", 4, 55 * 60)
    assert config.slurm.cluster_name == "TrnClusterStack-slurm" and config.slurm.partition == "trainium"
    assert config.cluster_test.arguments[:2] == ("--instance-type", "trn3.48xlarge")
    assert config.slurm.bootstrap_path == "/opt/trn-kit/trn_burnin_bootstrap.py"
    assert config.slurm.package.startswith("s3://cdk-") and config.slurm.package.endswith(".zip")
    assert config.state_parameter == "/trn-kit/TrnClusterStack/handover"
    # The functions take their deploy-time names from the environment, as Settings.load reads them.
    _, functions = definition_and_functions(slurm)
    for function in functions.values():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        if function["Properties"]["Handler"].startswith("handover_handler."):
            assert set(handler_settings.ENVIRONMENT.values()) <= set(variables)


def test_the_deployed_machine_replaces_a_failed_node_and_hands_over(monkeypatch, slurm):
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, FAIL]))
    final = machine(cloud, slurm, bundled_settings(slurm)).run(EXECUTION, {"trigger": "deploy"})
    assert final["verdict"]["state"] == "ready"
    assert len(cloud.calls("ec2", "TerminateInstances")) == 1
    assert final["verdict"]["replaced"][0]["replaced_by"] is not None


def test_a_poll_that_keeps_failing_is_retried_then_reported_and_the_execution_fails(monkeypatch, slurm):
    cloud = use(monkeypatch, Cloud())
    config = bundled_settings(slurm)
    broken = cloud.clients["ec2"].service
    original = broken.describe_instances

    def outage(**params):
        from tests.support.botocore_fake import AwsError

        raise AwsError("UnauthorizedOperation", "not authorized to perform ec2:DescribeInstances", 403)

    broken.describe_instances = outage
    with pytest.raises(ExecutionFailed) as failed:
        machine(cloud, slurm, config).run(EXECUTION, {"trigger": "deploy"})
    broken.describe_instances = original
    assert failed.value.error == "ClientError"
    assert "UnauthorizedOperation" in failed.value.cause
    # The start's head-node lookup (its failure only delays ParallelCluster's launches), then seven
    # polls (one and six retries), then the report of the error.
    assert len(cloud.calls("ec2", "DescribeInstances")) == 1 + 7
    assert cloud.messages[-1]["subject"] == "TrnClusterStack: Trainium cluster NOT ready (0/4 nodes)"
    assert "the handover stopped on an error it could not get past (ClientError:" in cloud.messages[-1]["message"]


def test_a_transient_failure_is_retried_without_losing_the_handover(monkeypatch, slurm):
    cloud = use(monkeypatch, Cloud())
    config = bundled_settings(slurm)
    ec2 = cloud.clients["ec2"].service
    original, calls = ec2.describe_instances, []

    def flaky(**params):
        calls.append(1)
        if len(calls) in (3, 4):
            raise RuntimeError("connection reset")
        return original(**params)

    ec2.describe_instances = flaky
    final = machine(cloud, slurm, config).run(EXECUTION, {"trigger": "deploy"})
    assert final["verdict"]["state"] == "ready"
    assert len(calls) > 4  # the two failed polls were retried and the handover went on
