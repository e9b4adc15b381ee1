"""app.py as the CDK CLI runs it: a user's mistake is one line on stderr, never a traceback."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO, context_with


def run_app(tmp_path, **overrides):
    # The CDK CLI hands context to the app through CDK_CONTEXT_JSON; so do we.
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps(context_with(overrides)),
        "CDK_OUTDIR": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "app.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_invalid_setting_prints_one_line_and_exits_1(tmp_path):
    result = run_app(tmp_path, orchestrator="nomad")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "configuration error: setting 'orchestrator': got 'nomad'; allowed: eks or slurm"
    ]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "manifest.json").exists()


def test_every_mistake_prints_a_line_of_its_own(tmp_path):
    result = run_app(tmp_path, orchestrator="nomad", InstanceType="trn2.48xlarge", tags='{"aws:team": "ml"}')
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "configuration error: setting 'InstanceType' is not a setting of this kit; did you mean 'instanceType'?",
        "configuration error: setting 'orchestrator': got 'nomad'; allowed: eks or slurm",
        "configuration error: setting 'tags': got 'aws:team'; allowed: tag keys not starting with aws: in any "
        "case (AWS reserves the prefix)",
    ]
    assert not (tmp_path / "manifest.json").exists()
