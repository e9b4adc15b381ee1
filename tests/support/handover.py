"""Drives the handover's Lambda code the way its state machine does (advance, then wait the
seconds it asks for, until done) against the fake cloud, with the fake's clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from tests.support.cloud import BUCKET, RESERVATION, Cloud
from trn_constructs.handover.handler import aws, workflow
from trn_constructs.handover.handler.settings import ClusterTestSettings, KubernetesSettings, Settings, SlurmSettings

STATE_MACHINE = "arn:aws:states:us-east-2:123456789012:stateMachine:TrnClusterStack-handover"
TOPIC = "arn:aws:sns:us-east-2:123456789012:alerts"
STATE_PARAMETER = "/trn-kit/TrnClusterStack/handover"
NODE_ALARM = "TrnClusterStack-node-left-service"


def settings(**overrides: Any) -> Settings:
    base = Settings(
        stack_name="TrnClusterStack", orchestrator="slurm", bucket=BUCKET, reservation_id=RESERVATION,
        topic_arn=TOPIC, state_parameter=STATE_PARAMETER, log_group="/trn-kit/TrnClusterStack/handover",
        node_alarm=NODE_ALARM,
        reports_prefix="burn-in/",
        handover_prefix="handover/", cluster_test_prefix="cluster-test/", expected_nodes=4,
        instances_per_ultraserver=1, ultraserver_type=None, min_healthy_fraction=1.0,
        whole_ultraservers=False, replace_failed_nodes=True, max_replacements=1,
        budget_seconds=55 * 60, poll_seconds=60, replacement_seconds=25 * 60, report_timeout_seconds=25 * 60,
        cluster_test=ClusterTestSettings(("--instance-type", "trn2.48xlarge"), 10 * 60),
        cluster_test_skipped=None,
        slurm=SlurmSettings(cluster_name="TrnClusterStack-slurm", partition="trainium", job_minutes=8,
                            job_environment=("HOME=/root",), region="us-east-2",
                            package="s3://cdk-assets/package.zip", bootstrap_source="s3://cdk-assets/bootstrap.py",
                            bootstrap_path="/opt/trn-kit/trn_burnin_bootstrap.py"),
    )  # fmt: skip
    return replace(base, **overrides)


def eks_settings(**overrides: Any) -> Settings:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "trn-kit-allreduce-{{run_id}}"},
           "spec": {"completions": 0, "parallelism": 0, "template": {"spec": {"containers": [
               {"args": ["--nodes", "{{nodes}}", "--rendezvous", "s3://{{bucket}}/cluster-test/{{run_id}}/",
                         "--not-after", "{{not_after}}"]}]}}}}
    return settings(orchestrator="eks", slurm=None, kubernetes=KubernetesSettings(
        cluster_name="TrnClusterStack", nodegroup_name="TrnClusterStack-trainium", namespace="trn-kit-burn-in",
        node_selector={"trn-kit/instance-type": "trn2.48xlarge"}, job=job), **overrides)


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Cloud:
    fake = Cloud()
    use(monkeypatch, fake)
    return fake


def use(monkeypatch: pytest.MonkeyPatch, fake: Cloud) -> Cloud:
    monkeypatch.setattr(aws, "client", fake.client)
    monkeypatch.setattr(aws, "now", lambda: fake.now)
    return fake


def run(cloud: Cloud, config: Settings, trigger: str = "deploy", name: str = "deploy-1",
        limit: timedelta = timedelta(hours=3)) -> dict[str, Any]:
    """One execution from start to its final state; the fake cloud's time moves as the
    state machine's Wait states would move it."""
    execution = STATE_MACHINE.replace(":stateMachine:", ":execution:") + f":{name}"
    cloud.executions[execution] = {"status": "RUNNING", "input": "{}", "start": cloud.now}
    state: dict[str, Any] = {"trigger": trigger}
    end = cloud.now + limit
    while cloud.now < end:
        state = workflow.advance({"state": state, "execution": execution}, config)
        if state["done"]:
            cloud.executions[execution].update(status="SUCCEEDED", output=__import__("json").dumps(state))
            return state
        cloud.advance(max(state["wait_seconds"], 1))
    raise AssertionError(f"the handover did not finish by {end}: {state}")
