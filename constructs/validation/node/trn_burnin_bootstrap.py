#!/usr/bin/env python3
"""Runs the kit's burn-in on this node: fetch the package, run it, record the verdict.

Used by both orchestrators: ParallelCluster runs it as the compute queue's OnNodeConfigured action,
EKS runs it in one pod per Trainium node. Standard library plus boto3 only, because it starts
before anything else is installed.

    trn_burnin_bootstrap.py --package s3://.../pkg.zip --reports s3://bucket/prefix/ --region R
        [--kubernetes-node NAME] -- <arguments for `python -m trn_burnin run`>

Exit code: the burn-in's (0 only when the node passed), so a failing node is not put in service.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

INSTALL_DIR = Path("/opt/trn-kit")
# Taint, label and condition names shared with the EKS construct (trn_constructs.eks).
TAINT_KEY = "trn-kit/burn-in"
LABEL_KEY = "trn-kit/burn-in"
REPORT_ANNOTATION = "trn-kit/burn-in-report"
CONDITION_TYPE = "TrnBurnInPassed"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def neuron_python() -> str:
    """The interpreter that has the Neuron `nki` package: the DLAMI's Neuron venv, else ours."""
    venvs = sorted(glob.glob("/opt/aws_neuronx_venv_*/bin/python"))
    return venvs[-1] if venvs else sys.executable


def download(uri: str, region: str, destination: Path) -> None:
    """boto3 where the system Python has it (DLAMI, Neuron containers), else the AWS CLI
    (ParallelCluster images ship it; their system Python may lack boto3)."""
    try:
        import boto3
    except ImportError:
        subprocess.run(["aws", "s3", "cp", uri, str(destination), "--region", region], check=True)
        return
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    boto3.client("s3", region_name=region).download_file(bucket, key, str(destination))


def fetch_package(uri: str, region: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "trn_burnin.zip"
        download(uri, region, archive)
        target = INSTALL_DIR / "trn_burnin"
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as package:
            package.extractall(target)


def run_burnin(reports: str, region: str, burnin_args: list[str], report_path: Path) -> int:
    command = [
        neuron_python(), "-m", "trn_burnin", "run", *burnin_args,
        "--s3-uri", reports, "--cloudwatch", "--region", region, "--output", str(report_path),
    ]
    environment = {**os.environ, "PYTHONPATH": str(INSTALL_DIR)}
    print("running:", " ".join(command), flush=True)
    return subprocess.run(command, env=environment, check=False).returncode


class KubernetesNode:
    """The few Node operations the burn-in's RBAC role allows, over the in-cluster API."""

    def __init__(self, name: str):
        self.url = f"https://kubernetes.default.svc/api/v1/nodes/{name}"
        self.token = (SERVICE_ACCOUNT / "token").read_text()
        self.tls = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))

    def _call(self, method: str, url: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            url,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/merge-patch+json",
            },
        )
        with urllib.request.urlopen(request, context=self.tls, timeout=30) as response:
            return json.load(response)

    def record(self, passed: bool, report: dict | None, report_uri: str) -> None:
        node = self._call("GET", self.url)
        failures = (report or {}).get("verdict", {}).get("failures", [])
        reason = "; ".join(f["message"] for f in failures)[:1000] or (
            "passed" if passed else "no report was produced"
        )
        taints = node["spec"].get("taints") or []
        self._call(
            "PATCH",
            self.url,
            {
                "metadata": {
                    # A conflicting concurrent change makes the API refuse instead of losing it.
                    "resourceVersion": node["metadata"]["resourceVersion"],
                    "labels": {LABEL_KEY: "passed" if passed else "failed"},
                    "annotations": {REPORT_ANNOTATION: report_uri},
                },
                # Passing nodes open for work; failing ones keep the taint.
                "spec": {"taints": [t for t in taints if not passed or t["key"] != TAINT_KEY]},
            },
        )
        self._call(
            "PATCH",
            self.url + "/status",
            {"status": {"conditions": [{
                "type": CONDITION_TYPE,
                "status": "True" if passed else "False",
                "reason": "BurnInPassed" if passed else "BurnInFailed",
                "message": reason,
            }]}},
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, help="s3:// URI of the zipped trn_burnin package")
    parser.add_argument("--reports", required=True, help="s3://bucket/prefix/ for the node report")
    parser.add_argument("--region", required=True)
    parser.add_argument("--kubernetes-node", help="on EKS: the Node to label and untaint")
    parser.add_argument("burnin_args", nargs=argparse.REMAINDER, help="-- then trn_burnin run arguments")
    args = parser.parse_args(argv)
    burnin_args = args.burnin_args[1:] if args.burnin_args[:1] == ["--"] else args.burnin_args

    fetch_package(args.package, args.region)
    report_path = INSTALL_DIR / "last-report.json"
    code = run_burnin(args.reports, args.region, burnin_args, report_path)
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    if args.kubernetes_node:
        KubernetesNode(args.kubernetes_node).record(code == 0, report, args.reports)
    print(f"burn-in {'passed' if code == 0 else 'FAILED'} (exit {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
