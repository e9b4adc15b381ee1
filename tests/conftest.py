"""Shared synthesis fixtures: each stack variant is synthesized once per test session (per worker).

Synthesis runs entirely offline: the context below is cdk.json's, so tests see exactly what
`make synth` sees, plus the overrides a variant names.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# jsii starts Node when aws_cdk is imported: use the pinned Node 22 even when pytest is run by hand.
os.environ["PATH"] = f"{REPO / 'node_modules' / '.bin'}{os.pathsep}{os.environ['PATH']}"

import pytest  # noqa: E402
from aws_cdk import App  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402

from stacks.app import add_stacks  # noqa: E402

CDK_CONTEXT: dict[str, Any] = json.loads((REPO / "cdk.json").read_text())["context"]

# Named variants every template-level check (nag, cfn-lint, snapshot) runs over.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},  # orchestrator slurm, as in cdk.json
    "eks": {"orchestrator": "eks"},
    "imported-vpc": {
        "vpcId": "vpc-0a1b2c3d4e5f60718",
        "computeSubnetId": "subnet-0a1b2c3d4e5f60718",
        "secondarySubnetId": "subnet-0f1e2d3c4b5a69788",
    },
    "trn2u-fsx-full": {
        "instanceType": "trn2u.48xlarge",
        "instanceCount": 8,
        "fsxStorageCapacityGiB": 4800,
        "fsxThroughputMBpsPerTiB": 1000,
        "fsxMetadataMode": "USER_PROVISIONED",
        "fsxMetadataIops": 12000,
        "fsxEfaEnabled": True,
        "fsxS3Path": "s3://example-training-data/datasets",
        "fsxRemovalPolicy": "destroy",
    },
    # The kit finds the block (UltraServer catalog entry) and reports it; no cluster.
    "purchase-dry-run": {
        "capacityPurchase": True,
        "capacityReservationId": "",
        "capacityPurchaseDurationHours": 168,
        "capacityPurchaseEarliestStart": "2026-12-01T00:00:00Z",
        "capacityPurchaseLatestStart": "2026-12-15T00:00:00Z",
        "capacityPurchaseMaxUpfrontFeeUsd": 250000,
    },
    # The kit bought an instance-level block (its window has passed, so it may have started) and
    # builds the EKS cluster in it, with e-mail alerts.
    "purchase-confirmed": {
        "orchestrator": "eks",
        "instanceType": "trn2.48xlarge",
        "instanceCount": 2,
        "capacityPurchase": True,
        "capacityReservationId": "",
        "capacityPurchaseDurationHours": 24,
        "capacityPurchaseEarliestStart": "2026-11-01T00:00:00Z",
        "capacityPurchaseLatestStart": "2026-11-03T00:00:00Z",
        "capacityPurchaseMaxUpfrontFeeUsd": 20000,
        "capacityPurchaseConfirm": True,
        "capacityEndNoticeHours": 6,
        "alertEmail": "ml-team@example.com",
    },
}


def follow_stack_outputs(value: Any, outputs: dict) -> Any:
    """``value`` with each Fn::GetStackOutput replaced by the producing stack's output value."""
    if isinstance(value, dict):
        if set(value) == {"Fn::GetStackOutput"}:
            return outputs[value["Fn::GetStackOutput"]["OutputName"]]["Value"]
        return {key: follow_stack_outputs(item, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [follow_stack_outputs(item, outputs) for item in value]
    return value


def renamed(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every Ref, Fn::GetAtt and DependsOn of a logical id in ``names`` renamed."""
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in names:
            return {"Ref": names[value["Ref"]]}
        if set(value) == {"Fn::GetAtt"} and value["Fn::GetAtt"][0] in names:
            return {"Fn::GetAtt": [names[value["Fn::GetAtt"][0]], *value["Fn::GetAtt"][1:]]}
        return {names.get(key, key) if key != "DependsOn" else key: renamed(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [names.get(item, item) if isinstance(item, str) else renamed(item, names) for item in value]
    return value


# A stack's own singleton of the same construct id in both stacks (log_groups.LOG_KEY_ID).
PER_STACK_SINGLETONS = ("LogKey",)


def merged_view(infra: dict, handover: dict) -> dict:
    """Both stacks' resources as one template, cross-stack references followed: what the cluster
    is, for assertions that do not care which stack holds a resource. The handover stack's own
    singletons (its log key) are renamed ``<id>InHandoverStack``, references to them with it."""
    handover = follow_stack_outputs(handover, infra.get("Outputs", {}))
    singletons = {
        key: f"{key}InHandoverStack"
        for key in set(infra.get("Resources", {})) & set(handover.get("Resources", {}))
        if key.startswith(PER_STACK_SINGLETONS)
    }
    handover = renamed(handover, singletons)
    merged: dict[str, Any] = {}
    for section in ("Parameters", "Conditions", "Resources", "Outputs", "Rules"):
        first, second = infra.get(section, {}), handover.get(section, {})
        clash = set(first) & set(second) - {"CDKMetadata", "BootstrapVersion", "CheckBootstrapVersion"}
        assert not clash, f"{section} in both stacks: {sorted(clash)}"
        if first or second:
            merged[section] = {**first, **second}
    return merged


@dataclass(frozen=True)
class Synthesized:
    """One synthesized app: its assembly directory and the cluster's two stacks, the
    infrastructure (``infra_json``) and the handover with operations (``handover_json``), and both
    as one merged view (``template_json``, ``template``) for checks of what the cluster is."""

    outdir: Path
    stack_name: str
    infra_stack_name: str
    infra_json: dict
    handover_json: dict

    @cached_property
    def template_json(self) -> dict:
        return merged_view(self.infra_json, self.handover_json)

    @property
    def template(self) -> Template:
        return Template.from_json(self.template_json)

    @property
    def infra(self) -> Template:
        return Template.from_json(self.infra_json)

    @property
    def handover(self) -> Template:
        return Template.from_json(self.handover_json)

    def stack_template_json(self, stack_name: str) -> dict:
        return json.loads((self.outdir / f"{stack_name}.template.json").read_text())

    def templates(self) -> dict[str, dict]:
        """Every template in the assembly, nested stacks included."""
        return {
            path.name: json.loads(path.read_text()) for path in self.outdir.glob("*.template.json")
        }

    def validation_report(self) -> dict:
        return json.loads((self.outdir / "validation-report.json").read_text())


def context_with(overrides: dict[str, Any]) -> dict[str, Any]:
    return {**CDK_CONTEXT, **overrides}


@cache
def _synth(overrides_json: str) -> Synthesized:
    outdir = Path(tempfile.mkdtemp(prefix="cdk-out-"))
    # At interpreter exit, not in a fixture: test modules import this file as tests.conftest,
    # a module object apart from the conftest pytest loads, so only atexit sees every outdir.
    atexit.register(shutil.rmtree, outdir, ignore_errors=True)
    app = App(context=context_with(json.loads(overrides_json)), outdir=str(outdir))
    stack = add_stacks(app)
    app.synth()
    return Synthesized(
        outdir=outdir,
        stack_name=stack.stack_name,
        infra_stack_name=stack.infra.stack_name,
        infra_json=json.loads((outdir / f"{stack.infra.artifact_id}.template.json").read_text()),
        handover_json=json.loads((outdir / f"{stack.artifact_id}.template.json").read_text()),
    )


def synth(**overrides: Any) -> Synthesized:
    """Synthesize the app with cdk.json context plus ``overrides`` (cached per override set)."""
    return _synth(json.dumps(overrides, sort_keys=True))


def synth_variant(name: str) -> Synthesized:
    return synth(**VARIANTS[name])


@pytest.fixture(scope="module")
def default_stack() -> Synthesized:
    return synth_variant("default")


def mask_asset_hashes(text: str) -> str:
    """Asset hashes change with any byte of bundled code; snapshots should not."""
    return re.sub(r"[0-9a-f]{64}", "<asset-hash>", text)


def masked_template(template: Any) -> Any:
    """``template`` with asset hashes masked, as a snapshot compares it. CDK orders asset ARNs in
    some lists by their hashes; once masked, they are sorted among the places they hold in the list,
    so the order holds still while other items stay where they are."""

    def settle(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: settle(item) for key, item in value.items()}
        if isinstance(value, list):
            items = [settle(item) for item in value]
            places = [i for i, item in enumerate(items) if isinstance(item, str) and "<asset-hash>" in item]
            for place, item in zip(places, sorted(items[i] for i in places)):
                items[place] = item
            return items
        return value

    return settle(json.loads(mask_asset_hashes(json.dumps(template, sort_keys=True))))


_failed_snapshots: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and "::test_snapshot" in report.nodeid:
        _failed_snapshots.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """A template snapshot that differs is either a regression or an intended change: say how to
    accept the second after reviewing the diff above."""
    if _failed_snapshots:
        modules = " ".join(sorted({nodeid.split("::")[0] for nodeid in _failed_snapshots}))
        terminalreporter.write_line(
            f"{len(_failed_snapshots)} template snapshot(s) differ. If the change is intended, review the "
            f"diff above, then update them with: .venv/bin/python -m pytest -n 2 {modules} --snapshot-update "
            "(and commit tests/__snapshots__/)",
            yellow=True,
        )
