"""A report that cannot be believed is that node's failure, "unreadable report ...", never a pass
and never a crash; with a lenient policy the handover still succeeds."""

from __future__ import annotations

import json

import pytest

from tests.support.cloud import PASS, Behaviour, Cloud
from tests.support.handover import run, settings, use
from tests.support.node_reports import node_report


def malformed(document) -> Behaviour:
    return Behaviour(body=json.dumps(document).encode() if not isinstance(document, bytes) else document)


def passed_as_string(instance_id: str) -> dict:
    report = node_report(instance_id)
    report["verdict"]["passed"] = "false"
    return report


CASES = {
    "a JSON array": ([1, 2], "a JSON array, not an object"),
    "JSON null": (None, "a JSON null, not an object"),
    "a JSON string": ("passed", "a JSON string, not an object"),
    "not JSON": (b"{truncated", "not JSON: "),
    "an empty object": ({}, "schema_version None, this gate reads 2: run the burn-in of this kit on the node again"),
    "a NaN": (b'{"schema_version": NaN}', "not JSON: NaN is not a number a report may hold"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_unreadable_report_fails_its_node_only(monkeypatch, case):
    document, why = CASES[case]
    cloud = use(monkeypatch, Cloud(slots=2, behaviours=[PASS, malformed(document)]))
    verdict = run(cloud, settings(expected_nodes=2, min_healthy_fraction=0.5, replace_failed_nodes=False,
                                  cluster_test=None, cluster_test_skipped="clusterTest is false"))["verdict"]
    bad = sorted(cloud.nodes)[1]
    assert verdict["state"] == "ready"
    assert verdict["passed"] == [sorted(cloud.nodes)[0]]
    reason = verdict["failed"][0]["reasons"][0]
    assert reason.startswith(f"unreadable report s3://trn-kit-reports/burn-in/{bad}-")
    assert why in reason


def test_verdict_passed_as_the_string_false_is_not_a_pass(monkeypatch):
    second = Behaviour(body=json.dumps(passed_as_string("i-00000000000000002")).encode())
    cloud = use(monkeypatch, Cloud(slots=2, behaviours=[PASS, second]))
    verdict = run(cloud, settings(expected_nodes=2, replace_failed_nodes=False, cluster_test=None,
                                  cluster_test_skipped="clusterTest is false"))["verdict"]
    assert verdict["state"] == "not-ready"
    assert "does not match report_schema.json: $.verdict.passed: expected boolean, got str" in (
        verdict["failed"][0]["reasons"][0])


def test_a_report_for_another_instance_is_not_believed(monkeypatch):
    other = Behaviour(body=json.dumps(node_report("i-0ffffffffffffffff")).encode())
    cloud = use(monkeypatch, Cloud(slots=2, behaviours=[PASS, other]))
    verdict = run(cloud, settings(expected_nodes=2, replace_failed_nodes=False, cluster_test=None,
                                  cluster_test_skipped="clusterTest is false"))["verdict"]
    assert verdict["failed"][0]["reasons"][0].endswith(
        "it describes instance i-0ffffffffffffffff, not i-00000000000000002")


def test_a_report_that_says_passed_but_lists_failures_fails(monkeypatch):
    report = node_report("i-00000000000000002", slow_core=5)
    report["verdict"]["passed"] = True
    cloud = use(monkeypatch, Cloud(slots=2, behaviours=[PASS, Behaviour(body=json.dumps(report).encode())]))
    verdict = run(cloud, settings(expected_nodes=2, replace_failed_nodes=False, cluster_test=None,
                                  cluster_test_skipped="clusterTest is false"))["verdict"]
    assert verdict["failed"][0]["reasons"][0].endswith(
        "contradicts itself: verdict.passed is true with 2 failures; it passes with 127 of 128 cores proven")
