"""The handover's Lambda code: its handler package, the plan the stack writes for it, and the part
of trn_burnin it reads reports with (the schemas and their standard-library checker)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling, Token
from aws_cdk import aws_lambda as lambda_

HANDLER_DIR = Path(__file__).resolve().parent / "handler"
BURN_IN_DIR = HANDLER_DIR.parents[2] / "trn_burnin"
PACKAGE = "handover_handler"  # the handler's package name inside the asset
BURN_IN_FILES = ("__init__.py", "schema.py", "report_schema.json", "cluster_test_schema.json")


@jsii.implements(ILocalBundling)
class _Bundle:
    def __init__(self, plan: str):
        self._plan = plan

    def try_bundle(self, output_dir: str, _options: Any) -> bool:
        out = Path(output_dir)
        shutil.copytree(HANDLER_DIR, out / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (out / PACKAGE / "plan.json").write_text(self._plan)
        (out / "trn_burnin").mkdir()
        for name in BURN_IN_FILES:
            shutil.copy2(BURN_IN_DIR / name, out / "trn_burnin" / name)
        return True


def handover_code(plan: Mapping[str, Any]) -> lambda_.Code:
    """Bundled here, offline (no container image is ever used); the asset's hash is its content's."""
    text = json.dumps(plan, indent=1, sort_keys=True)
    if Token.is_unresolved(text):
        raise ValueError("the handover plan must hold synth-time values only; pass deploy-time ones in the environment")
    return lambda_.Code.from_asset(
        str(HANDLER_DIR),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(image=DockerImage.from_registry("unused-local-bundling"), local=_Bundle(text)),
    )


# The module of every entry point inside the asset (handler/index.py).
MODULE = f"{PACKAGE}.index"
