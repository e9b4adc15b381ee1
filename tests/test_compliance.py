"""Every stack variant: cdk-nag AwsSolutions clean, cfn-lint clean, checkov clean, and a snapshot.

cdk-nag runs as a validation plugin during synthesis (an unacknowledged error fails synth); these
tests also read the validation report so an acknowledged-but-reported or warning finding shows up.
checkov runs once over every template of every variant (its own virtual environment, from make
setup); it skips only what a resource's Metadata acknowledges, with a reason, and no skip list.
"""

import json
import subprocess
from collections import defaultdict

import pytest
from cfnlint.api import ManualArgs, lint
from syrupy.extensions.json import JSONSnapshotExtension

from tests.conftest import REPO, VARIANTS, masked_template, synth_variant

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    return request.param, synth_variant(request.param)


def test_no_unacknowledged_nag_or_validation_findings(variant):
    _, synthesized = variant
    report = synthesized.validation_report()
    findings = [
        (plugin["pluginName"], violation["ruleName"], construct["constructPath"])
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]
    assert findings == []


def test_cfn_lint_reports_no_errors(variant):
    _, synthesized = variant
    for name, template in synthesized.templates().items():
        matches = lint(json.dumps(template), config=ManualArgs(regions=["us-east-2"]))
        errors = [f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.id.startswith("E")]
        assert errors == [], name


@pytest.fixture(scope="module")
def checkov_results(tmp_path_factory) -> dict[str, dict[str, list[dict]]]:
    """checkov's results per variant and outcome ("passed", "failed", "skipped"), from one run."""
    root = tmp_path_factory.mktemp("checkov")
    for name in VARIANTS:
        (root / name).mkdir()
        for file_name, template in synth_variant(name).templates().items():
            (root / name / file_name).write_text(json.dumps(template))
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run make setup")
    # --skip-download: offline, and nothing from the platform (no downloaded suppressions).
    run = subprocess.run(
        [str(CHECKOV), "--directory", str(root), "--framework", "cloudformation",
         "--output", "json", "--skip-download"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    reports = json.loads(run.stdout)
    results: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for report in reports if isinstance(reports, list) else [reports]:
        for outcome in ("passed", "failed", "skipped"):
            for check in report["results"][f"{outcome}_checks"]:
                results[check["file_path"].strip("/").split("/")[0]][outcome].append(check)
    return results


def test_checkov_reports_no_failures(variant, checkov_results):
    name, _ = variant
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in checkov_results[name]["failed"]
    ]
    assert failed == []


def test_checkov_scans_every_template(variant, checkov_results):
    name, synthesized = variant
    scanned = {
        c["file_path"].rsplit("/", 1)[-1]
        for outcome in ("passed", "skipped")
        for c in checkov_results[name][outcome]
    }
    assert scanned == set(synthesized.templates())


def test_every_checkov_skip_is_acknowledged_on_its_resource_with_a_reason(variant, checkov_results):
    name, synthesized = variant
    templates = synthesized.templates()
    for check in checkov_results[name]["skipped"]:
        logical_id = check["resource"].split(".", 1)[1]
        template = templates[check["file_path"].rsplit("/", 1)[-1]]
        skips = template["Resources"][logical_id]["Metadata"]["checkov"]["skip"]
        reason = next(skip["comment"] for skip in skips if skip["id"] == check["check_id"])
        assert len(reason.split()) >= 8, (check["check_id"], logical_id, reason)


def test_snapshot(variant, snapshot):
    # One JSON file per variant under __snapshots__/, reviewable as a CloudFormation diff.
    _, synthesized = variant
    templates = {synthesized.infra_stack_name: synthesized.infra_json, synthesized.stack_name: synthesized.handover_json}
    assert masked_template(templates) == snapshot.use_extension(JSONSnapshotExtension)


def test_masking_orders_asset_arns_among_their_places_only():
    hash_a, hash_b = "a" * 64, "b" * 64
    template = {"Resource": [f"arn:{hash_b}.zip", {"Ref": "Bucket"}, f"arn:{hash_a}.py"]}
    assert masked_template(template) == {
        "Resource": ["arn:<asset-hash>.py", {"Ref": "Bucket"}, "arn:<asset-hash>.zip"]
    }
