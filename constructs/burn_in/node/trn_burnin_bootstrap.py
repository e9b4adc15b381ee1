#!/usr/bin/env python3
"""Runs the kit's burn-in on this node: fetch the package, run it, record the verdict.

Used by both orchestrators: ParallelCluster runs it as the compute queue's OnNodeConfigured action,
EKS runs it in one pod per Trainium node. Standard library plus boto3 only, because it starts
before anything else is installed.

    trn_burnin_bootstrap.py --package s3://.../pkg.zip --reports s3://bucket/prefix/ --region R
        [--kubernetes-node NAME | --slurm] -- <arguments for `python -m trn_burnin run`>
    trn_burnin_bootstrap.py --package s3://.../pkg.zip --region R
        --cluster-test -- <arguments for `python -m trn_burnin cluster-test`>
    trn_burnin_bootstrap.py --kubernetes-node NAME --check-boot

It leaves /opt/trn-kit/bin/trn-burnin behind, so later commands run the same package with the same
interpreter. On EKS it records the verdict on the Node.

With --slurm (ParallelCluster's OnNodeConfigured) it holds this node in a Slurm maintenance
reservation of its own, starts the burn-in as a transient systemd service and exits 0 at once:
the node joins the cluster and takes no work until its verdict. The service then lifts the hold
on a pass, or drains the node with the reason (`sinfo -R` shows it) and lifts the hold on a
failure. Neither the node's bootstrap nor the cluster's creation waits on, or fails for, a chip.

With --cluster-test (the gate's cluster all-reduce: on the Slurm head node, and on EKS in pods of
an image without the package) it fetches the package the same way, then becomes
`trn-burnin cluster-test`: no burn-in, nothing recorded on a Node.

A verdict on EKS holds for the boot it was reached on: the Node records that boot's id. A rebooted
instance keeps its Node, labels and (absent) taint, so after every boot --check-boot (a pod on
every Trainium node, whose container the kubelet restarts after a reboot) compares the recorded boot
with the running one; on a difference it taints the Node again and removes the verdict, and the
burn-in runs again before the node takes work. A replaced instance is a new Node that registers
with the taint and no verdict.

Exit code: the burn-in's (0 only when the node passed); with --slurm 0 once the burn-in is started
(the verdict is the node's state and its report); with --cluster-test, the cluster test's own.
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
# Under INSTALL_DIR: the fetched package under the Neuron interpreter, for later commands too.
LAUNCHER = Path("bin/trn-burnin")
SCONTROL = "/opt/slurm/bin/scontrol"  # ParallelCluster's Slurm prefix
HOLD_PREFIX = "trn-kit-burn-in-"  # + the Slurm node name: the reservation that holds it
BACKGROUND_UNIT = "trn-kit-burn-in"
BACKGROUND_LOG = Path("/var/log/trn-kit-burn-in.log")
MAX_DRAIN_REASON = 200  # Slurm shows reasons in one `sinfo -R` column: keep them short
# Taint, label and condition names shared with the EKS construct (trn_constructs.eks).
TAINT_KEY = "trn-kit/burn-in"
TAINT_VALUE = "pending"
TAINT_EFFECT = "NoSchedule"
LABEL_KEY = "trn-kit/burn-in"
REPORT_ANNOTATION = "trn-kit/burn-in-report"
# The boot the verdict was reached on (the host's boot id, which is also the Node's
# status.nodeInfo.bootID); another boot must burn in again.
BOOT_ANNOTATION = "trn-kit/burn-in-boot-id"
CONDITION_TYPE = "TrnBurnInPassed"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Not namespaced: a container reads the host's.
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MERGE_PATCH = "application/merge-patch+json"
# Merges status.conditions by type; a merge patch would replace the whole list and drop the
# conditions of the kubelet and the node monitoring agent.
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


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


def boot_id() -> str:
    return BOOT_ID.read_text().strip()


class KubernetesNode:
    """The few Node operations the burn-in's RBAC role allows, over the in-cluster API."""

    def __init__(self, name: str):
        self.url = f"https://kubernetes.default.svc/api/v1/nodes/{name}"
        self.token = (SERVICE_ACCOUNT / "token").read_text()
        self.tls = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))

    def _call(
        self, method: str, url: str, body: dict | None = None, content_type: str = MERGE_PATCH
    ) -> dict:
        request = urllib.request.Request(
            url,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )
        with urllib.request.urlopen(request, context=self.tls, timeout=30) as response:
            return json.load(response)

    def instance_id(self) -> str:
        """The EC2 instance behind the Node, from its provider id (aws:///<zone>/<instance id>):
        a pod reaches no instance metadata (the nodes' IMDS hop limit is 1)."""
        return self._call("GET", self.url)["spec"]["providerID"].rsplit("/", 1)[-1]

    def _set_condition(self, status: str, reason: str, message: str) -> None:
        self._call(
            "PATCH",
            self.url + "/status",
            {"status": {"conditions": [
                {"type": CONDITION_TYPE, "status": status, "reason": reason, "message": message}
            ]}},
            STRATEGIC_MERGE_PATCH,
        )

    def record(self, passed: bool, report: dict | None, report_uri: str, boot: str) -> None:
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
                    "annotations": {REPORT_ANNOTATION: report_uri, BOOT_ANNOTATION: boot},
                },
                # Passing nodes open for work; failing ones keep the taint.
                "spec": {"taints": [t for t in taints if not passed or t["key"] != TAINT_KEY]},
            },
        )
        self._set_condition(
            "True" if passed else "False", "BurnInPassed" if passed else "BurnInFailed", reason
        )

    def check_boot(self, boot: str) -> str:
        """Keep a verdict reached on this boot; forget one of an earlier boot (a reboot, auto
        repair's or anyone's): taint the node again and remove the verdict, so the burn-in
        DaemonSet runs on it again. What it found, in one line."""
        node = self._call("GET", self.url)
        metadata = node["metadata"]
        verdict = (metadata.get("labels") or {}).get(LABEL_KEY)
        judged = (metadata.get("annotations") or {}).get(BOOT_ANNOTATION)
        if verdict is None:
            return "no burn-in verdict yet: the burn-in runs on this boot"
        if judged == boot:
            return f"burn-in {verdict} on this boot ({boot})"
        taints = node["spec"].get("taints") or []
        if not any(t["key"] == TAINT_KEY for t in taints):
            taints = [*taints, {"key": TAINT_KEY, "value": TAINT_VALUE, "effect": TAINT_EFFECT}]
        self._call(
            "PATCH",
            self.url,
            {
                "metadata": {
                    "resourceVersion": metadata["resourceVersion"],
                    "labels": {LABEL_KEY: None},
                    "annotations": {BOOT_ANNOTATION: None},
                },
                "spec": {"taints": taints},
            },
        )
        outcome = (
            f"burn-in {verdict} on boot {judged or 'unknown'}, not on this boot ({boot}): "
            "tainted again until the burn-in runs again"
        )
        self._set_condition("Unknown", "RebootedSinceBurnIn", outcome)
        return outcome


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


def this_slurm_node() -> str | None:
    """This instance's Slurm node name; None (printed) when Slurm does not know it."""
    listing = run_command([SCONTROL, "-o", "show", "nodes"])
    try:
        address = local_ipv4()
    except Exception as error:  # noqa: BLE001 - the host name may still identify the node
        print(f"no private IPv4 from instance metadata ({error}); trying the host name")
        address = None
    name = slurm_node_name(listing, address, short_hostname())
    if name is None:
        print(f"no Slurm node has NodeAddr {address} or NodeName {short_hostname()}")
    return name


def hold_reservation(node: str) -> str:
    return HOLD_PREFIX + node


def hold_slurm_node(node: str) -> bool:
    """Keep jobs off ``node`` while it burns in: a maintenance reservation of root's. It outlives
    ParallelCluster's resume of the node at the end of its bootstrap (a drain would not), and a
    node in it counts as ready for cluster creation, which therefore never waits on the burn-in.
    A reservation left by an earlier instance of the same node is replaced."""
    name = hold_reservation(node)
    subprocess.run([SCONTROL, "delete", f"ReservationName={name}"], capture_output=True, timeout=60)
    try:
        run_command([SCONTROL, "create", "reservation", f"ReservationName={name}", f"Nodes={node}",
                     "StartTime=now", "Duration=UNLIMITED", "Users=root", "Flags=MAINT,IGNORE_JOBS"])
    except Exception as error:  # noqa: BLE001 - the burn-in still runs and a failure still drains
        detail = getattr(error, "stderr", None) or error
        print(f"could not hold Slurm node {node} for the burn-in ({type(error).__name__}: {detail}); "
              "it may take jobs before its verdict", flush=True)
        return False
    print(f"holding Slurm node {node} for the burn-in (reservation {name})", flush=True)
    return True


def settle_slurm_node(node: str, passed: bool, reason: str) -> None:
    """Drain a failed node with ``reason`` (sinfo -R shows it), then lift the hold either way: a
    passed node takes work, a failed one stays DRAINED. Best effort: failures are printed."""
    steps = []
    if not passed:
        steps.append([SCONTROL, "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}"])
    steps.append([SCONTROL, "delete", f"ReservationName={hold_reservation(node)}"])
    for step in steps:
        try:
            run_command(step)
        except Exception as error:  # noqa: BLE001 - the report in S3 still carries the verdict
            detail = getattr(error, "stderr", None) or error
            print(f"{' '.join(step[1:3])} failed for Slurm node {node} ({type(error).__name__}: {detail})",
                  flush=True)
    print(f"Slurm node {node}: {'in service' if passed else 'drained: ' + reason}", flush=True)


def start_in_background(argv: list[str], node: str) -> None:
    """Run this script again, with ``--slurm-node``, as a transient systemd service: it outlives the
    custom action, which must end for ParallelCluster to finish configuring the node."""
    command = [sys.executable, str(Path(__file__).resolve()), "--slurm-node", node, *argv]
    unit = ["systemd-run", f"--unit={BACKGROUND_UNIT}", "--collect", "--quiet",
            "--property=StandardOutput=append:" + str(BACKGROUND_LOG),
            "--property=StandardError=append:" + str(BACKGROUND_LOG)]
    subprocess.run([*unit, *command], check=True, timeout=60)
    print(f"burn-in started in the background ({BACKGROUND_UNIT}; log {BACKGROUND_LOG})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", help="s3:// URI of the zipped trn_burnin package")
    parser.add_argument("--reports", help="s3://bucket/prefix/ for the node report (the burn-in needs it)")
    parser.add_argument("--region")
    parser.add_argument("--kubernetes-node", help="on EKS: the Node to label and untaint")
    parser.add_argument("--slurm", action="store_true",
                        help="on Slurm: hold this node, burn in in the background, drain it when it fails")
    parser.add_argument("--slurm-node", help=argparse.SUPPRESS)  # the background run, on this node
    parser.add_argument("--cluster-test", action="store_true",
                        help="run `trn_burnin cluster-test` with the arguments after -- instead of the burn-in")
    parser.add_argument("--check-boot", action="store_true",
                        help="with --kubernetes-node: forget a verdict of an earlier boot, nothing else")
    parser.add_argument("burnin_args", nargs=argparse.REMAINDER,
                        help="-- then trn_burnin run (or cluster-test) arguments")
    args = parser.parse_args(argv)
    burnin_args = args.burnin_args[1:] if args.burnin_args[:1] == ["--"] else args.burnin_args
    if args.check_boot:
        if not args.kubernetes_node or args.package or args.cluster_test or args.slurm or burnin_args:
            parser.error("--check-boot takes --kubernetes-node and nothing else")
        print(KubernetesNode(args.kubernetes_node).check_boot(boot_id()), flush=True)
        return 0
    if not (args.package and args.region):
        parser.error("the burn-in and --cluster-test need --package and --region")
    if args.cluster_test and (args.kubernetes_node or args.slurm or args.slurm_node):
        parser.error("--kubernetes-node and --slurm are for the burn-in, not --cluster-test")
    if not args.cluster_test and not args.reports:
        parser.error("the burn-in needs --reports")

    if args.slurm:
        # ParallelCluster's OnNodeConfigured: hold the node, start the burn-in, end at once, so
        # that neither this node's bootstrap nor cluster creation ever waits on (or fails for) a chip.
        fetch_package(args.package, args.region)
        node = this_slurm_node()
        if node is None:
            print("not a Slurm node this script can find: burning in without holding it", flush=True)
            return run_and_report(args, burnin_args)[0]
        hold_slurm_node(node)
        given = list(argv if argv is not None else sys.argv[1:])
        split = given.index("--") if "--" in given else len(given)
        start_in_background([a for a in given[:split] if a != "--slurm"] + given[split:], node)
        return 0
    if not args.slurm_node:
        fetch_package(args.package, args.region)
    if args.cluster_test:
        exec_cluster_test(burnin_args)
    code, report = run_and_report(args, burnin_args)
    if args.slurm_node:
        settle_slurm_node(args.slurm_node, code == 0, drain_reason(report, code, args.reports))
        return 0  # the verdict is on the node and in S3; the unit itself did its job
    return code


def run_and_report(args: argparse.Namespace, burnin_args: list[str]) -> tuple[int, dict | None]:
    report_path = INSTALL_DIR / "last-report.json"
    report_path.unlink(missing_ok=True)  # a stale report must not stand for this run
    node = KubernetesNode(args.kubernetes_node) if args.kubernetes_node else None
    if node:
        burnin_args = [*burnin_args, "--instance-id", node.instance_id()]
    code = run_burnin(args.reports, args.region, burnin_args, report_path)
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    if node:
        node.record(code == 0, report, args.reports, boot_id())
    print(f"burn-in {'passed' if code == 0 else 'FAILED'} (exit {code})", flush=True)
    return code, report


if __name__ == "__main__":
    sys.exit(main())
