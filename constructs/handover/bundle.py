"""The handover's Lambda code: its handler package, the plan the stack writes for it, and the part
of trn_burnin it reads reports with (the schemas and their standard-library checker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from aws_cdk import Token
from aws_cdk import aws_lambda as lambda_

from trn_burnin.report_check import GATE_FILES
from trn_constructs.handlers import handler_code

HANDLER_DIR = Path(__file__).resolve().parent / "handler"
BURN_IN_DIR = HANDLER_DIR.parents[2] / "trn_burnin"
PACKAGE = "handover_handler"  # the handler's package name inside the asset
BURN_IN_FILES = (*GATE_FILES, "cluster_test_schema.json")
# The module of every entry point inside the asset (handler/index.py).
MODULE = f"{PACKAGE}.index"


def handover_code(plan: Mapping[str, Any]) -> lambda_.Code:
    """Bundled here, offline; the asset's hash is its content's, plan included."""
    text = json.dumps(plan, indent=1, sort_keys=True)
    if Token.is_unresolved(text):
        raise ValueError("the handover plan must hold synth-time values only; pass deploy-time ones in the environment")
    return handler_code(HANDLER_DIR, [BURN_IN_DIR / name for name in BURN_IN_FILES], package=PACKAGE,
                        generated={f"{PACKAGE}/plan.json": text})
