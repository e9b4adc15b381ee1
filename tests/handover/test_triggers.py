"""How a handover starts and stops: the block's start (its Delivered event or the schedule), a run
that finds another one running, a block that has not started or is about to end, and the stop of
new work before the end."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.support.cloud import BLOCK_START, HEAD_NODE, Cloud, FakeKubernetes
from tests.support.handover import NODE_ALARM, STATE_MACHINE, STATE_PARAMETER, eks_settings, run, settings, use
from trn_constructs.handover.handler import index, kubernetes, settings as settings_module, slurm, workflow


def test_a_handover_started_before_the_block_waits_for_it_then_runs(monkeypatch):
    cloud = use(monkeypatch, Cloud(now=BLOCK_START - timedelta(minutes=20)))
    final = run(cloud, settings(), trigger="block-start", name="early")
    assert final["verdict"]["state"] == "ready"
    assert final["started_at"] == "2026-12-10T11:30:00Z"


def restarts_sent(cloud: Cloud) -> list[str]:
    return [c["Parameters"]["commands"][0] for c in cloud.calls("ssm", "SendCommand")
            if "restart clustermgtd" in c["Parameters"]["commands"][0]]


def test_at_a_staged_slurm_blocks_start_parallelcluster_launches_at_once_not_at_its_next_check(monkeypatch):
    # ParallelCluster last looked at the block a minute before its start: left alone, it would
    # hold the nodes in its reservation for ten more minutes.
    cloud = use(monkeypatch, Cloud(capacity_block_checked=BLOCK_START - timedelta(minutes=1)))
    assert cloud.active() == []
    final = run(cloud, settings(), trigger="block-start", name="delivered")
    assert final["verdict"]["state"] == "ready"
    (script,) = restarts_sent(cloud)
    assert script.startswith("if ! /opt/slurm/bin/scontrol show reservation=pcluster-cr-0123456789abcdef0 ")
    assert cloud.clustermgtd_restarts == 1
    assert min(n.launched for n in cloud.nodes.values()) < BLOCK_START + timedelta(minutes=2)


def test_a_restart_that_fails_costs_minutes_not_the_handover(monkeypatch):
    cloud = use(monkeypatch, Cloud(capacity_block_checked=BLOCK_START - timedelta(minutes=1)))
    monkeypatch.setattr(slurm, "SUPERVISORCTL_GLOB", "/opt/nothing/*/supervisorctl")
    final = run(cloud, settings(), trigger="block-start", name="delivered")
    assert final["verdict"]["state"] == "ready"
    # Asked at the start, then again every 3 minutes while no instance ran; ParallelCluster's own
    # check, 11 minutes after its last, launched them.
    assert len(restarts_sent(cloud)) == 3 and cloud.clustermgtd_restarts == 0
    first = min(n.launched for n in cloud.nodes.values())
    assert BLOCK_START + timedelta(minutes=10) <= first < BLOCK_START + timedelta(minutes=11)


def test_a_start_trigger_stands_down_while_another_handover_runs(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    cloud.executions[STATE_MACHINE.replace(":stateMachine:", ":execution:") + ":deploy-1"] = {
        "status": "RUNNING", "input": "{}", "start": cloud.now}
    final = run(cloud, settings(), trigger="block-start", name="delivered")
    assert final["verdict"]["state"] == "joined"
    assert final["verdict"]["summary"] == "the handover deploy-1 is already running; this block-start run stands down"
    assert cloud.messages == []  # no verdict of its own to publish


def test_a_block_about_to_end_hands_over_nothing(monkeypatch):
    cloud = use(monkeypatch, Cloud(now=BLOCK_START + timedelta(hours=23, minutes=30)))
    verdict = run(cloud, settings())["verdict"]
    assert verdict["state"] == "not-ready"
    assert verdict["summary"] == (
        "Capacity Block cr-0123456789abcdef0 ends at 2026-12-11T11:30:00Z: a 55-minute handover started now "
        "would not finish before its instances are stopped")


def test_eks_scales_the_node_group_at_the_start_and_runs_the_cluster_test_as_a_job(monkeypatch):
    cloud = use(monkeypatch, Cloud(orchestrator="eks"))
    api = FakeKubernetes(cloud)
    monkeypatch.setattr(kubernetes.Kubernetes, "for_cluster", classmethod(lambda cls, name: api))
    assert cloud.active() == []  # the node group waits at 0 for the block
    verdict = run(cloud, eks_settings())["verdict"]
    assert cloud.calls("autoscaling", "SetDesiredCapacity") == [
        {"AutoScalingGroupName": "eks-trainium-0000", "DesiredCapacity": 4, "HonorCooldown": False}]
    assert verdict["state"] == "ready"
    (job,) = api.jobs.values()
    assert job["metadata"]["name"] == "trn-kit-allreduce-deploy-1"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["--nodes", "4", "--rendezvous", "s3://trn-kit-reports/cluster-test/deploy-1/",
                    "--not-after", "2026-12-10T12:25:00Z"]


def test_eks_replaces_a_failed_node_through_its_group(monkeypatch):
    from tests.support.cloud import FAIL, PASS

    cloud = use(monkeypatch, Cloud(orchestrator="eks", behaviours=[PASS, FAIL]))
    api = FakeKubernetes(cloud)
    monkeypatch.setattr(kubernetes.Kubernetes, "for_cluster", classmethod(lambda cls, name: api))
    verdict = run(cloud, eks_settings())["verdict"]
    failed = sorted(cloud.nodes)[1]
    assert cloud.calls("autoscaling", "TerminateInstanceInAutoScalingGroup") == [
        {"InstanceId": failed, "ShouldDecrementDesiredCapacity": False}]
    assert cloud.calls("ec2", "TerminateInstances") == []
    assert verdict["state"] == "ready" and verdict["replaced"][0]["replaced_by"] == sorted(cloud.nodes)[4]


def test_two_ultraservers_one_degraded(monkeypatch):
    from tests.support.cloud import FAIL, PASS

    cloud = use(monkeypatch, Cloud(slots=8, instances_per_ultraserver=4, behaviours=[PASS] * 5 + [FAIL]))
    config = settings(expected_nodes=8, instances_per_ultraserver=4, ultraserver_type="u-trn2x64",
                      replace_failed_nodes=False)
    verdict = run(cloud, config)["verdict"]
    assert verdict["state"] == "not-ready"
    assert ("UltraServer 1 of 2 (cb-00000000000000000): 4/4 nodes passed; "
            "UltraServer 2 of 2 (cb-00000000000000001): 3/4 nodes passed (degraded)") in verdict["summary"]
    ultraservers = {u["ultraserver_id"]: u for u in verdict["ultraservers"]}
    assert len(ultraservers["cb-00000000000000001"]["passed"]) == 3

    cloud = use(monkeypatch, Cloud(slots=8, instances_per_ultraserver=4, behaviours=[PASS] * 5 + [FAIL]))
    whole = run(cloud, settings(expected_nodes=8, instances_per_ultraserver=4, ultraserver_type="u-trn2x64",
                                replace_failed_nodes=False, min_healthy_fraction=0.5, whole_ultraservers=True))
    assert whole["verdict"]["state"] == "ready"
    assert "policy 50% of nodes in whole UltraServers" in whole["verdict"]["summary"]
    cloud = use(monkeypatch, Cloud(slots=8, instances_per_ultraserver=4, behaviours=[PASS] * 5 + [FAIL]))
    strict = run(cloud, settings(expected_nodes=8, instances_per_ultraserver=4, ultraserver_type="u-trn2x64",
                                 replace_failed_nodes=False, min_healthy_fraction=0.75, whole_ultraservers=True))
    assert strict["verdict"]["state"] == "not-ready"  # 7 of 8 nodes passed, but only 4 in whole UltraServers


def test_the_expiry_warning_drains_slurm_and_says_so(monkeypatch):
    cloud = use(monkeypatch, Cloud())
    monkeypatch.setattr(settings_module.Settings, "load", classmethod(lambda cls, *a, **k: settings()))
    index.stop_new_work({"detail": {"capacity-reservation-id": "cr-0123456789abcdef0",
                                    "end-date": "2026-12-11T11:30:00Z"}})
    (command,) = cloud.calls("ssm", "SendCommand")
    assert command["InstanceIds"] == [HEAD_NODE]
    script = command["Parameters"]["commands"][0]
    assert "/opt/slurm/bin/scontrol update NodeName=\"$nodes\" State=DRAIN" in script
    assert "Reason='trn-kit: Capacity Block ends at 2026-12-11T11:30:00Z, no new jobs'" in script
    assert cloud.messages[-1]["subject"] == "TrnClusterStack: Capacity Block ends at 2026-12-11T11:30:00Z; new work stopped"
    # The nodes leave with the block: their count no longer pages anyone.
    assert cloud.calls("cloudwatch", "DisableAlarmActions") == [{"AlarmNames": [NODE_ALARM]}]


def test_the_expiry_warning_cordons_eks_nodes(monkeypatch):
    cloud = use(monkeypatch, Cloud(orchestrator="eks"))
    cloud.desired = 4
    cloud.advance(60)
    api = FakeKubernetes(cloud)
    monkeypatch.setattr(kubernetes.Kubernetes, "for_cluster", classmethod(lambda cls, name: api))
    monkeypatch.setattr(settings_module.Settings, "load", classmethod(lambda cls, *a, **k: eks_settings()))
    index.stop_new_work({"detail": {"end-date": "2026-12-11T11:30:00Z"}})
    assert len(api.patches) == 4
    assert {body["spec"]["unschedulable"] for _, body, _ in api.patches} == {True}
    assert {kind for *_, kind in api.patches} == {"application/strategic-merge-patch+json"}
