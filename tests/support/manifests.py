"""Reading what a synthesized stack applies to its cluster (Kubernetes manifests) and bundles
with the handover (plan.json), with CloudFormation tokens resolved to realistic values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# What deploy-time tokens in a manifest resolve to, realistic enough for the schema's formats.
TOKEN_VALUES = {
    "Ref": "fs-0123456789abcdef0",
    "DNSName": "fs-0123456789abcdef0.fsx.us-east-2.amazonaws.com",
    "LustreMountName": "abcdef12",
    # The handover gate's first stage: how many nodes passed, and the run's name.
    "PassedNodes": "4",
    "RunId": "0123456789ab",
    "ClusterTestNotAfter": "2026-12-01T12:25:00Z",
}


def resolved(value: Any, tokens: list[dict] | None = None) -> Any:
    """``value`` with its CloudFormation tokens resolved as TOKEN_VALUES say; each token met is
    added to ``tokens``."""
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(resolved(part, tokens) for part in parts)
    if tokens is not None:
        tokens.append(value)
    if "Fn::GetAtt" in value:
        return TOKEN_VALUES[value["Fn::GetAtt"][1]]
    # File system ids and bucket names alike: a realistic name for any other reference.
    return TOKEN_VALUES["Ref"]


def applied_manifests(template_json: dict) -> list[tuple[list[dict], list[dict]]]:
    """(manifests, tokens they reference) for every KubernetesManifest in the template."""
    applied = []
    for resource in template_json["Resources"].values():
        if resource["Type"] != "Custom::AWSCDK-EKS-KubernetesResource":
            continue
        manifest = resource["Properties"]["Manifest"]
        tokens: list[dict] = []
        applied.append((json.loads(resolved(manifest, tokens)), tokens))
    return applied


def bundled_plan(outdir: Path) -> dict:
    """The plan.json the stack bundled with the handover's functions."""
    (text,) = {p.read_text() for p in outdir.glob("asset.*/handover_handler/plan.json")}
    return json.loads(text)
