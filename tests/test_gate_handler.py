"""Handover gate handler, stage 1: stubbed EC2 and S3; reports are produced by the real burn-in
runner."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.gate_fakes import (
    BUCKET, PREFIX, REQUEST_ID, RESERVATION, RULES, T0, Aws, body, nodes_report, poll, properties, report,
)
from trn_constructs.validation.handler import index


def test_on_event_records_the_deadline(monkeypatch):
    monkeypatch.setattr(index, "now", lambda: T0)
    response = index.on_event({"RequestType": "Create", "ResourceProperties": properties()})
    assert response == {
        "PhysicalResourceId": f"handover-gate-{RESERVATION}",
        "Data": {"Deadline": "2026-11-22T09:00:00+00:00"},
    }


def test_delete_waits_for_nothing():
    event = {"RequestType": "Delete", "ResourceProperties": properties(), "PhysicalResourceId": "g"}
    assert index.on_event(event) == {"PhysicalResourceId": "g"}
    assert index.is_complete(event) == {"IsComplete": True}


def test_all_nodes_pass(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa", "i-0bbb"))
        result = poll()
    assert result["IsComplete"] is True
    # Each fake core reports 60 TFLOPS against 78.6 TFLOPS peak per NeuronCore-v3.
    assert result["Data"] == {
        "Summary": f"2/2 nodes passed the burn-in (policy 100%; {RULES}); "
        "median chip throughput 76.3% of peak. Cluster all-reduce not run: clusterTest is false",
        "ReportLocation": f"s3://{BUCKET}/{PREFIX}",
        "PassedNodes": "2",
        "RunId": index.run_id(REQUEST_ID),
    }


def test_one_failed_node_fails_the_deploy_naming_node_and_reason(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa",), slow=("i-0bbb",))
        with pytest.raises(index.GateFailed) as failed:
            poll()
    message = str(failed.value)
    assert message.startswith(f"Burn-in gate failed: 1/2 nodes passed the burn-in (policy 100%; {RULES})")
    assert "Failed nodes: i-0bbb: " in message
    assert "core 5" in message
    assert "i-0aaa:" not in message


def test_waits_while_a_report_is_missing_before_the_deadline(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0))
        assert poll() == {"IsComplete": False}


def test_missing_report_at_the_deadline_names_the_node(monkeypatch):
    with Aws(monkeypatch, T0 + timedelta(hours=2)) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0))
        with pytest.raises(index.GateFailed, match="i-0bbb: no report before the deadline"):
            poll()


def test_malformed_report_fails_that_node(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0),
            ("i-0bbb-20261122T081000Z.json", b"{not json", T0),
        )
        with pytest.raises(index.GateFailed) as failed:
            poll()
    assert f"i-0bbb: unreadable report s3://{BUCKET}/{PREFIX}i-0bbb-20261122T081000Z.json" in str(
        failed.value
    )


def test_policy_below_one_accepts_a_failed_node_and_says_so(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        nodes_report(aws, passed=("i-0aaa",), slow=("i-0bbb",))
        result = poll(properties(MinHealthyFraction="0.5"))
    summary = result["Data"]["Summary"]
    assert summary.startswith(f"1/2 nodes passed the burn-in (policy 50%; {RULES})")
    assert ". Accepted failures: i-0bbb: " in summary


def test_newest_report_wins_and_earlier_reports_of_gone_instances_are_ignored(monkeypatch):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(
            ("i-0aaa-20261122T070000Z.json", body(report("i-0aaa", slow_core=1)), T0 - timedelta(hours=1)),
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0),
            ("i-0bbb-20261122T081000Z.json", body(report("i-0bbb")), T0),
            ("i-0ccc-20261122T070000Z.json", body(report("i-0ccc", slow_core=2)), T0 - timedelta(hours=1)),
        )
        summary = poll()["Data"]["Summary"]
    assert summary.startswith("2/2 nodes passed")
    assert "i-0ccc" not in summary


def test_a_node_replaced_after_failing_is_named_but_its_replacement_counts(monkeypatch):
    # ParallelCluster replaced i-0bbb, whose bootstrap failed, with i-0ddd.
    with Aws(monkeypatch, T0 + timedelta(minutes=20)) as aws:
        aws.running("i-0aaa", "i-0ddd")
        aws.reports(
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0 + timedelta(minutes=10)),
            ("i-0bbb-20261122T081000Z.json", body(report("i-0bbb", slow_core=5)), T0 + timedelta(minutes=10)),
            ("i-0ddd-20261122T081900Z.json", body(report("i-0ddd")), T0 + timedelta(minutes=19)),
        )
        summary = poll()["Data"]["Summary"]
    assert summary.startswith(
        f"2/2 nodes passed the burn-in (policy 100%; {RULES}); median chip throughput 76.3% of peak; "
        "replaced after failing the burn-in: i-0bbb: core 5"
    )
    assert "i-0ddd" not in summary


def test_too_few_instances_at_the_deadline_fails(monkeypatch):
    with Aws(monkeypatch, T0 + timedelta(hours=2)) as aws:
        aws.running("i-0aaa")
        aws.reports(("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0))
        with pytest.raises(index.GateFailed, match="only 1 of 2 instances were running"):
            poll()


def _passed_as_string(document):
    document["verdict"].update(passed="false", failures=[])
    return document


@pytest.mark.parametrize("written, reason", [
    (_passed_as_string, "does not match report_schema.json: $.verdict.passed: expected boolean, got str"),
    (lambda document: [document], "a JSON array, not an object"),
    (lambda document: None, "a JSON null, not an object"),
    (lambda document: "passed", "a JSON string, not an object"),
], ids=["passed is a string", "array", "null", "string"])
def test_a_report_that_is_not_a_report_fails_only_its_node(monkeypatch, written, reason):
    with Aws(monkeypatch, T0) as aws:
        aws.running("i-0aaa", "i-0bbb")
        aws.reports(
            ("i-0aaa-20261122T081000Z.json", body(report("i-0aaa")), T0),
            ("i-0bbb-20261122T081000Z.json", body(written(report("i-0bbb"))), T0),
        )
        # with a policy of half the nodes the handover still succeeds, naming the node and why
        summary = poll(properties(MinHealthyFraction="0.5"))["Data"]["Summary"]
    assert summary.startswith(f"1/2 nodes passed the burn-in (policy 50%; {RULES})")
    assert (f"Accepted failures: i-0bbb: unreadable report s3://{BUCKET}/{PREFIX}i-0bbb-20261122T081000Z.json "
            f"({reason})") in summary
