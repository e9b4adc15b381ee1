"""`make handover`: the state the handover keeps in SSM, in a few lines, for each stage of a
handover; and one clear line when it cannot be read."""

from __future__ import annotations

import json
from datetime import timedelta

import boto3
import pytest
from botocore.stub import Stubber

from tests.support.cloud import BLOCK_START, FAIL, PASS, Cloud
from tests.support.handover import STATE_PARAMETER, run, settings, use
from trn_constructs.handover import status_cli


def lines(state: dict, now=BLOCK_START) -> list[str]:
    return status_cli.describe("TrnClusterStack", state, now)


def test_a_staged_cluster_says_when_the_block_starts():
    state = {"state": "staged", "updated_at": "2026-12-09T09:00:00Z", "summary": "STAGED: everything but ...",
             "block_start": "2026-12-10T11:30:00Z"}
    assert lines(state, BLOCK_START - timedelta(hours=2, minutes=5)) == [
        "TrnClusterStack: STAGED (as of 2026-12-09T09:00:00Z)",
        "STAGED: everything but ...",
        "The block starts in 2 h 05 min.",
    ]
    # Past the start with no handover reporting: where to look.
    assert lines(state, BLOCK_START + timedelta(minutes=7))[-1] == (
        "The block started 7 min ago and no handover has reported yet: see the state machine "
        "TrnClusterStack-handover in the Step Functions console, or run `make handover` again in a minute.")


def test_a_not_ready_verdict_names_each_failed_node_and_why(monkeypatch):
    # The parameter as a real handover leaves it: one node failed and was not replaced.
    cloud = use(monkeypatch, Cloud(behaviours=[PASS, FAIL]))
    run(cloud, settings(replace_failed_nodes=False))
    state = json.loads(cloud.parameters[STATE_PARAMETER])
    failed = sorted(cloud.nodes)[1]
    shown = lines(state)
    assert shown[0].startswith("TrnClusterStack: NOT READY (as of 2026-12-10T")
    assert shown[1].startswith("3/4 nodes passed the burn-in")
    assert shown[2] == "Failed nodes:"
    assert shown[3].startswith(f"  {failed}: core 5 (device 0) ")
    assert shown[3].endswith("; not replaced: burnInReplaceFailedNodes is false")
    assert shown[4] == f"Verdict: s3://trn-kit-reports/handover/deploy-1/verdict.json"


def test_many_failed_nodes_keep_the_state_within_ssms_limit_and_say_how_many_more():
    from trn_constructs.handover.handler.publish import PARAMETER_LIMIT, _compact

    failed = [{"instance_id": f"i-{n:017x}", "reason": "x" * 300} for n in range(36)]
    text = _compact({"state": "not-ready", "summary": "s" * 3000, "failed": failed, "verdict": "s3://b/v.json"})
    state = json.loads(text)  # still JSON, not cut mid-document
    assert len(text) <= PARAMETER_LIMIT and state["failed_count"] == 36
    assert lines(state)[-2] == f"  and {36 - len(state['failed'])} more: see the verdict"


def test_burning_in_shows_the_progress():
    state = {"state": "burning-in", "updated_at": "2026-12-10T11:40:00Z", "run_id": "delivered",
             "summary": "burning in: 2 of 4 nodes reported"}
    assert lines(state) == ["TrnClusterStack: BURNING IN (as of 2026-12-10T11:40:00Z)",
                            "burning in: 2 of 4 nodes reported"]


def stubbed_ssm(monkeypatch, respond) -> None:
    client = boto3.client("ssm", region_name="us-east-2", aws_access_key_id="test", aws_secret_access_key="test")
    stubber = Stubber(client)
    respond(stubber)
    stubber.activate()
    monkeypatch.setattr(status_cli.boto3, "client", lambda service, region_name=None: client)


@pytest.mark.parametrize(("state", "code"), [("ready", 0), ("not-ready", 1), ("burning-in", 3), ("staged", 3)])
def test_the_exit_status_tells_scripts_whether_the_cluster_is_ready(monkeypatch, capsys, state, code):
    value = json.dumps({"state": state, "summary": "..."})
    stubbed_ssm(monkeypatch, lambda s: s.add_response(
        "get_parameter", {"Parameter": {"Name": STATE_PARAMETER, "Value": value, "Type": "String"}},
        {"Name": STATE_PARAMETER}))
    assert status_cli.main(["--region", "us-east-2"], now=BLOCK_START) == code
    assert capsys.readouterr().out.startswith("TrnClusterStack: ")


def test_a_stack_never_deployed_is_one_line(monkeypatch, capsys):
    stubbed_ssm(monkeypatch, lambda s: s.add_client_error("get_parameter", "ParameterNotFound", http_status_code=400))
    assert status_cli.main(["--region", "us-east-2"]) == 2
    assert capsys.readouterr().err == (
        "no handover state in /trn-kit/TrnClusterStack/handover: is TrnClusterStack deployed in this account "
        "and region (cdk deploy TrnClusterStack)?\n")


def test_a_broken_cdk_json_is_one_line(tmp_path, capsys):
    broken = tmp_path / "cdk.json"
    broken.write_text("{not json")
    assert status_cli.main(["--cdk-json", str(broken)]) == 2
    assert capsys.readouterr().err.startswith(f"configuration error: {broken} is not the kit's cdk.json")
