"""The handover from the block's start to its verdict, against the fake cloud (tests/support/cloud.py):
all pass, one fails and its replacement passes, one fails twice, a slot that never frees, an
interrupted handover resumed without replacing twice."""

from __future__ import annotations

import json
from dataclasses import replace

from tests.support.cloud import FAIL, PASS, SILENT, Behaviour, Cloud
from tests.support.handover import NODE_ALARM, STATE_PARAMETER, cloud, run, settings, use  # noqa: F401


def terminations(cloud: Cloud) -> list[str]:
    return [i for call in cloud.calls("ec2", "TerminateInstances") for i in call["InstanceIds"]]


def test_all_nodes_pass_and_the_cluster_test_hands_over(cloud):
    final = run(cloud, settings())
    verdict = final["verdict"]
    assert verdict["state"] == "ready"
    assert verdict["passed_nodes"] == 4 and verdict["failed"] == [] and verdict["replaced"] == []
    # Handed over: from now on a node that leaves pages the operators.
    assert cloud.alarm_actions == {NODE_ALARM: True}
    assert verdict["summary"].startswith(
        "4/4 nodes passed the burn-in (policy 100% of nodes; cores >= 70% of the 78.6 TFLOPS bf16 peak and >= 90% "
        "of their node's median); median chip throughput 76.3% of peak. Cluster all-reduce across 4 nodes: 150.0 GiB/s"
    )
    assert terminations(cloud) == []
    assert json.loads(cloud.parameters[STATE_PARAMETER])["state"] == "ready"
    assert cloud.messages[-1]["subject"] == "TrnClusterStack: Trainium cluster ready (4/4 nodes)"


def test_a_failed_node_is_replaced_and_its_replacement_passes(monkeypatch):
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, FAIL, PASS, PASS]))
    final = run(cloud, settings())
    verdict = final["verdict"]
    failed = sorted(cloud.nodes)[1]
    successor = sorted(cloud.nodes)[4]
    assert terminations(cloud) == [failed]
    assert verdict["state"] == "ready"
    assert verdict["replaced"] == [{
        "instance_id": failed, "reason": verdict["replaced"][0]["reason"],
        "replaced_at": verdict["replaced"][0]["replaced_at"], "replaced_by": successor,
    }]
    assert "core 5 (device 0) reached 20.0 TFLOPS" in verdict["replaced"][0]["reason"]
    assert f"replaced: {failed} (core 5 (device 0)" in verdict["summary"]
    assert f"by {successor}" in verdict["summary"]
    assert successor in verdict["passed"] and failed not in verdict["passed"]


def test_a_slot_that_fails_twice_stays_quarantined_and_the_policy_decides(monkeypatch):
    behaviours = [PASS, FAIL, PASS, PASS, FAIL]  # the replacement fails too
    strict = use(monkeypatch, Cloud(behaviours=behaviours))
    verdict = run(strict, settings())["verdict"]
    second = sorted(strict.nodes)[4]
    assert verdict["state"] == "not-ready"
    assert terminations(strict) == [sorted(strict.nodes)[1]]  # the second failure is not replaced
    assert [f["instance_id"] for f in verdict["failed"]] == [second]
    assert verdict["failed"][0]["reasons"][-1] == (
        "not replaced: its slot was replaced 1 time(s) already (burnInMaxReplacements=1)"
    )
    assert verdict["summary"].startswith("3/4 nodes passed the burn-in (policy 100% of nodes")

    lenient = use(monkeypatch, Cloud(behaviours=behaviours))
    verdict = run(lenient, settings(min_healthy_fraction=0.75))["verdict"]
    assert verdict["state"] == "ready"
    assert verdict["passed_nodes"] == 3
    assert "Cluster all-reduce across 3 nodes" in verdict["summary"]


def test_a_slot_that_does_not_free_in_time_is_named(monkeypatch):
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, FAIL], relaunch=False))
    verdict = run(cloud, settings())["verdict"]
    failed = sorted(cloud.nodes)[1]
    assert verdict["state"] == "not-ready"
    assert verdict["replaced"][0]["replaced_by"] is None
    assert f"replaced: {failed} (" in verdict["summary"]
    assert "no replacement came up" in verdict["summary"]
    assert "only 3 of 4 instances were running" in verdict["summary"]


def test_an_interrupted_handover_resumed_by_a_redeploy_replaces_nothing_twice(monkeypatch):
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, FAIL, PASS, PASS]))
    # The first handover stops (its deploy was interrupted) right after it replaced the failed node.
    from trn_constructs.handover.handler import workflow

    state = {"trigger": "deploy"}
    first = "arn:aws:states:us-east-2:123456789012:execution:TrnClusterStack-handover:deploy-1"
    while not terminations(cloud):
        state = workflow.advance({"state": state, "execution": first}, settings())
        cloud.advance(max(state["wait_seconds"], 1))
    failed = terminations(cloud)[0]
    cloud.advance(120)
    verdict = run(cloud, settings(), name="deploy-2")["verdict"]
    assert terminations(cloud) == [failed]
    assert verdict["state"] == "ready"
    assert verdict["replaced"][0]["instance_id"] == failed


def test_a_hung_node_is_replaced_once_it_is_overdue(monkeypatch):
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, SILENT, PASS, PASS]))
    verdict = run(cloud, settings(report_timeout_seconds=18 * 60))["verdict"]
    silent = sorted(cloud.nodes)[1]
    assert terminations(cloud) == [silent]
    assert verdict["replaced"][0]["reason"] == "no report 18 minutes after it launched"
    assert verdict["state"] == "ready"


def test_a_node_without_a_report_fails_at_the_deadline(monkeypatch):
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, SILENT, PASS, PASS]))
    verdict = run(cloud, settings(cluster_test=None, cluster_test_skipped="clusterTest is false",
                                  report_timeout_seconds=3 * 3600))["verdict"]
    silent = sorted(cloud.nodes)[1]
    assert verdict["state"] == "not-ready"
    assert terminations(cloud) == []
    assert verdict["failed"] == [{"instance_id": silent, "reasons": ["no report before the deadline"], "report": None}]
    assert verdict["summary"].endswith("Failed nodes: " + silent + ": no report before the deadline")


def test_no_replacement_when_it_could_not_finish_before_the_deadline(monkeypatch):
    late = Behaviour(passes=False, report_after=PASS.report_after * 2)
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, late, PASS, PASS]))
    verdict = run(cloud, settings(min_healthy_fraction=0.75, report_timeout_seconds=3 * 3600))["verdict"]
    assert terminations(cloud) == []
    reasons = verdict["failed"][0]["reasons"]
    assert reasons[-1] == "not replaced: a replacement needs about 25 minutes and only 14 remain before the nodes' deadline"
    assert verdict["state"] == "ready"


def test_replacement_off_quarantines_without_terminating(monkeypatch):
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, FAIL]))
    verdict = run(cloud, settings(replace_failed_nodes=False))["verdict"]
    assert terminations(cloud) == []
    assert verdict["failed"][0]["reasons"][-1] == "not replaced: burnInReplaceFailedNodes is false"
    assert verdict["state"] == "not-ready"
    assert cloud.messages[-1]["subject"] == "TrnClusterStack: Trainium cluster NOT ready (3/4 nodes)"
    assert cloud.alarm_actions == {NODE_ALARM: False}  # a cluster not handed over pages no one
