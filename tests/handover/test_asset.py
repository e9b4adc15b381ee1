"""The handover's Lambda code as it ships: the asset holds the handler package, its plan and
trn_burnin's checker and schemas, and runs with nothing else (no numpy, no CDK, not this repository)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, synth_variant
from tests.support.node_reports import node_report
from trn_constructs.handover.bundle import BURN_IN_FILES, PACKAGE


def handover_asset(synthesized) -> Path:
    (function,) = [r for name, r in synthesized.handover_json["Resources"].items()
                   if r["Type"] == "AWS::Lambda::Function" and name.startswith("HandoverAdvance")]
    assert function["Properties"]["Handler"] == f"{PACKAGE}.index.advance"
    return synthesized.outdir / f"asset.{function['Properties']['Code']['S3Key'].removesuffix('.zip')}"


# What the function runs: only its asset on the path (numpy, the CDK and this repository's own
# packages unimportable), as in Lambda's Python runtime with boto3; it loads its settings and reads
# one real report and one that is a JSON array.
IN_LAMBDA = """
import json, os, sys
sys.modules["numpy"] = sys.modules["aws_cdk"] = sys.modules["trn_constructs"] = None
sys.path[:] = [p for p in sys.path if p.rstrip("/") != sys.argv[1]]
os.environ.update(REPORTS_BUCKET="b", CAPACITY_RESERVATION_ID="cr-0123456789abcdef0", ALERT_TOPIC_ARN="t")
from handover_handler import index, reports
from handover_handler.settings import Settings
settings = Settings.load()
class S3:
    def __init__(self, body): self.body = body
    def get_object(self, Bucket, Key): return {"Body": type("Body", (), {"read": lambda _: self.body})()}
for name in sys.argv[2:]:
    item = reports.ReportObject("burn-in/i-0aaa-1.json", "i-0aaa", None, "")
    outcome = reports.read_outcome(S3(open(name, "rb").read()), "b", item)
    print(json.dumps([settings.orchestrator, outcome.passed, outcome.reasons[0]]))
"""


def test_the_handover_ships_its_plan_and_trn_burnins_checker_and_needs_nothing_else(tmp_path):
    synthesized = synth_variant("default")
    asset = handover_asset(synthesized)
    shipped = sorted(str(p.relative_to(asset)) for p in asset.rglob("*") if p.is_file())
    assert f"{PACKAGE}/plan.json" in shipped and f"{PACKAGE}/index.py" in shipped
    assert [p for p in shipped if not p.startswith(PACKAGE)] == sorted(f"trn_burnin/{n}" for n in BURN_IN_FILES)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(node_report("i-0aaa")))
    bad.write_text("[]")
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", IN_LAMBDA, str(REPO), str(good), str(bad)], cwd=asset,
                          env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        ["slurm", True, "passed"],
        ["slurm", False, "unreadable report s3://b/burn-in/i-0aaa-1.json: a JSON array, not an object"],
    ]
