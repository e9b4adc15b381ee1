#!/usr/bin/env python3
"""Runs the kit's burn-in on this node: fetch the package, run it, record the verdict.

Used by both orchestrators: ParallelCluster runs it as the compute queue's OnNodeConfigured action,
EKS runs it in one pod per Trainium node. Standard library plus boto3 only, because it starts
before anything else is installed.

    trn_burnin_bootstrap.py --package s3://.../pkg.zip --reports s3://bucket/prefix/ --region R
        [--kubernetes-node NAME | --slurm] -- <arguments for `python -m trn_burnin run`>
    trn_burnin_bootstrap.py --package s3://.../pkg.zip --region R
        --cluster-test -- <arguments for `python -m trn_burnin cluster-test`>

It leaves /opt/trn-kit/bin/trn-burnin behind, so later jobs (the gate's cluster all-reduce on
Slurm) run the same package with the same interpreter. On EKS it records the verdict on the Node;
with --slurm a failing node is drained with the reason, so `sinfo -R` says why.

With --cluster-test (the gate's cluster all-reduce on EKS, in pods of an image without the package)
it fetches the package the same way, then becomes `trn-burnin cluster-test`: no burn-in, nothing
recorded on the Node.

Exit code: the burn-in's (0 only when the node passed), so a failing node is not put in service;
with --cluster-test, the cluster test's own.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import NoReturn

INSTALL_DIR = Path("/opt/trn-kit")
# Under INSTALL_DIR; the gate's Slurm job calls it by its full path (trn_constructs.validation).
LAUNCHER = Path("bin/trn-burnin")
SCONTROL = "/opt/slurm/bin/scontrol"  # ParallelCluster's Slurm prefix
MAX_DRAIN_REASON = 200  # Slurm shows reasons in one `sinfo -R` column: keep them short
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
    write_launcher()


def write_launcher() -> Path:
    """A POSIX sh entry point: the fetched package under the interpreter neuron_python() picks."""
    path = INSTALL_DIR / LAUNCHER
    path.parent.mkdir(parents=True, exist_ok=True)
    script = (
        "#!/bin/sh\n"
        "# Written by trn_burnin_bootstrap.py: runs the trn_burnin package fetched for this node.\n"
        f"PYTHONPATH={shlex.quote(str(INSTALL_DIR))}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(neuron_python())} -m trn_burnin "$@"\n'
    )
    # Replaced, not rewritten in place: a job may be running the old copy.
    staging = path.with_name(path.name + ".new")
    staging.write_text(script)
    staging.chmod(0o755)
    os.replace(staging, path)
    return path


def run_burnin(reports: str, region: str, burnin_args: list[str], report_path: Path) -> int:
    command = [
        str(INSTALL_DIR / LAUNCHER), "run", *burnin_args,
        "--s3-uri", reports, "--cloudwatch", "--region", region, "--output", str(report_path),
    ]
    print("running:", " ".join(command), flush=True)
    return subprocess.run(command, check=False).returncode


def exec_cluster_test(arguments: list[str]) -> NoReturn:
    """Replace this process with the cluster test, so its exit code and signals are the pod's."""
    launcher = str(INSTALL_DIR / LAUNCHER)
    command = [launcher, "cluster-test", *arguments]
    print("running:", " ".join(command), flush=True)
    os.execv(launcher, command)


def failure_summary(report: dict | None) -> str:
    failures = (report or {}).get("verdict", {}).get("failures", [])
    return "; ".join(f["message"] for f in failures)


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

    def instance_id(self) -> str:
        """The EC2 instance behind the Node, from its provider id (aws:///<zone>/<instance id>):
        a pod reaches no instance metadata (the nodes' IMDS hop limit is 1)."""
        return self._call("GET", self.url)["spec"]["providerID"].rsplit("/", 1)[-1]

    def record(self, passed: bool, report: dict | None, report_uri: str) -> None:
        node = self._call("GET", self.url)
        reason = failure_summary(report)[:1000] or (
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


def drain_reason(report: dict | None, code: int, reports: str) -> str:
    """One short line without double quotes; the report location always survives the cut."""
    detail = " ".join((failure_summary(report) or f"exit {code}, no report").replace('"', "'").split())
    head, tail = "trn-burnin failed: ", f"; report {reports}"
    room = max(MAX_DRAIN_REASON - len(head) - len(tail), 3)
    if len(detail) > room:
        detail = detail[: room - 3] + "..."
    return head + detail + tail


def run_command(argv: list[str]) -> str:
    """Standard output of ``argv`` (no shell); CalledProcessError when it fails."""
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def local_ipv4() -> str:
    """This instance's private IPv4 from IMDSv2, through the IMDS client of the fetched package."""
    sys.path.insert(0, str(INSTALL_DIR))
    from trn_burnin.imds import imds_fetch

    return imds_fetch("local-ipv4")


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def slurm_node_name(listing: str, ipv4: str | None, hostname: str) -> str | None:
    """From ``scontrol -o show nodes``: the node at this instance's IPv4, else the one named like
    this host (ParallelCluster names compute hosts after their Slurm node by default)."""
    nodes = []
    for line in listing.splitlines():
        fields: dict[str, str] = {}
        for token in line.split():
            key, _, value = token.partition("=")
            fields.setdefault(key, value)  # the first: a free-text Reason comes later on the line
        if fields.get("NodeName"):
            nodes.append(fields)
    by_address = [n["NodeName"] for n in nodes if ipv4 and n.get("NodeAddr") == ipv4]
    by_name = [n["NodeName"] for n in nodes if n["NodeName"] == hostname]
    return (by_address + by_name + [None])[0]


def drain_slurm_node(reason: str) -> None:
    """Drain this node with ``reason``. Best effort: a failure is printed, never raised."""
    try:
        listing = run_command([SCONTROL, "-o", "show", "nodes"])
        try:
            address = local_ipv4()
        except Exception as error:  # noqa: BLE001 - the host name may still identify the node
            print(f"no private IPv4 from instance metadata ({error}); trying the host name")
            address = None
        name = slurm_node_name(listing, address, short_hostname())
        if name is None:
            print(f"not draining: no Slurm node has NodeAddr {address} or NodeName {short_hostname()}")
            return
        run_command([SCONTROL, "update", f"NodeName={name}", "State=DRAIN", f"Reason={reason}"])
        print(f"drained Slurm node {name}: {reason}", flush=True)
    except Exception as error:  # noqa: BLE001 - the burn-in's exit code already fails the node
        detail = getattr(error, "stderr", None) or error
        print(f"could not drain this Slurm node ({type(error).__name__}: {detail})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, help="s3:// URI of the zipped trn_burnin package")
    parser.add_argument("--reports", help="s3://bucket/prefix/ for the node report (the burn-in needs it)")
    parser.add_argument("--region", required=True)
    parser.add_argument("--kubernetes-node", help="on EKS: the Node to label and untaint")
    parser.add_argument("--slurm", action="store_true", help="on Slurm: drain this node when it fails")
    parser.add_argument("--cluster-test", action="store_true",
                        help="run `trn_burnin cluster-test` with the arguments after -- instead of the burn-in")
    parser.add_argument("burnin_args", nargs=argparse.REMAINDER,
                        help="-- then trn_burnin run (or cluster-test) arguments")
    args = parser.parse_args(argv)
    burnin_args = args.burnin_args[1:] if args.burnin_args[:1] == ["--"] else args.burnin_args
    if args.cluster_test and (args.kubernetes_node or args.slurm):
        parser.error("--kubernetes-node and --slurm are for the burn-in, not --cluster-test")
    if not args.cluster_test and not args.reports:
        parser.error("the burn-in needs --reports")

    fetch_package(args.package, args.region)
    if args.cluster_test:
        exec_cluster_test(burnin_args)
    node = KubernetesNode(args.kubernetes_node) if args.kubernetes_node else None
    if node:
        burnin_args = [*burnin_args, "--instance-id", node.instance_id()]
    report_path = INSTALL_DIR / "last-report.json"
    code = run_burnin(args.reports, args.region, burnin_args, report_path)
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    if node:
        node.record(code == 0, report, args.reports)
    print(f"burn-in {'passed' if code == 0 else 'FAILED'} (exit {code})", flush=True)
    if args.slurm and code != 0:
        drain_slurm_node(drain_reason(report, code, args.reports))
    return code


if __name__ == "__main__":
    sys.exit(main())
