"""Every stack variant: cdk-nag AwsSolutions clean, cfn-lint clean, and a snapshot.

cdk-nag runs as a validation plugin during synthesis (an unacknowledged error fails synth); these
tests also read the validation report so an acknowledged-but-reported or warning finding shows up.
"""

import json

import pytest
from cfnlint.api import ManualArgs, lint
from syrupy.extensions.json import JSONSnapshotExtension

from tests.conftest import VARIANTS, masked_template, synth_variant


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
