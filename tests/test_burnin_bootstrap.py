"""The node bootstrap's launcher and its Slurm drain of a failing node (no Slurm, no IMDS: fakes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trn_constructs.burn_in import NODE_LAUNCHER
from trn_constructs.burn_in.node import trn_burnin_bootstrap as bootstrap

REPO = Path(__file__).resolve().parent.parent
REPORTS = "s3://reports/burn-in/"
# `scontrol -o show nodes`: one node a line; a free-text Reason may contain anything after.
SHOW_NODES = "\n".join([
    "NodeName=trainium-st-trn2-1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 NodeAddr=10.0.1.11 "
    "NodeHostName=trainium-st-trn2-1 State=IDLE+CLOUD Partitions=trainium",
    "NodeName=trainium-st-trn2-2 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 NodeAddr=10.0.1.12 "
    "NodeHostName=trainium-st-trn2-2 State=IDLE+CLOUD Partitions=trainium "
    "Reason=moved from NodeAddr=10.0.1.99 [root@2026-11-22T08:00:00]",
    "NodeName=trainium-st-trn2-3 Arch=x86_64 NodeAddr=trainium-st-trn2-3 State=IDLE+CLOUD+POWERED_DOWN",
])
FAILED = {"verdict": {"passed": False, "failures": [
    {"message": "core 17 (device 2) reached 20.0 TFLOPS bf16, below 70% of the 78.6 TFLOPS peak"},
    {"message": 'device 0 HBM has 1 uncorrectable ECC events\n(counter "mem_ecc_uncorrected")'},
]}}


def test_launcher_runs_the_fetched_package_with_the_neuron_interpreter(monkeypatch, tmp_path):
    monkeypatch.setattr(bootstrap, "INSTALL_DIR", tmp_path)
    monkeypatch.setattr(bootstrap, "neuron_python", lambda: sys.executable)
    (tmp_path / "trn_burnin").symlink_to(REPO / "trn_burnin")  # stands in for the unpacked package
    launcher = bootstrap.write_launcher()
    assert launcher == tmp_path / "bin" / "trn-burnin"
    assert launcher.read_text() == (
        "#!/bin/sh\n"
        "# Written by trn_burnin_bootstrap.py: runs the trn_burnin package fetched for this node.\n"
        f"PYTHONPATH={tmp_path}\n"
        "export PYTHONPATH\n"
        f'exec {sys.executable} -m trn_burnin "$@"\n'
    )
    done = subprocess.run([str(launcher), "plan", "--instance-type", "trn2.48xlarge"], cwd="/",
                          capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert done.stdout.splitlines()[2].split()[:5] == ["trn2", "trn2.48xlarge", "v3", "128", "bf16"]


def test_the_burn_in_itself_runs_through_the_launcher(monkeypatch, tmp_path):
    monkeypatch.setattr(bootstrap, "INSTALL_DIR", tmp_path)
    commands = []
    monkeypatch.setattr(bootstrap.subprocess, "run",
                        lambda command, check: commands.append(command) or subprocess.CompletedProcess(command, 0))
    assert bootstrap.run_burnin(REPORTS, "us-east-2", ["--dtype", "bf16"], tmp_path / "r.json") == 0
    assert commands == [[str(tmp_path / "bin" / "trn-burnin"), "run", "--dtype", "bf16", "--s3-uri", REPORTS,
                         "--cloudwatch", "--region", "us-east-2", "--output", str(tmp_path / "r.json")]]


@pytest.mark.parametrize("ipv4, hostname, expected", [
    ("10.0.1.12", "ip-10-0-1-12", "trainium-st-trn2-2"),  # by address, whatever the host is called
    (None, "trainium-st-trn2-3", "trainium-st-trn2-3"),  # no metadata: by the host name
    ("10.0.1.99", "ip-10-0-1-99", None),  # an address only a Reason mentions is not a match
])
def test_this_node_is_found_by_address_then_host_name(ipv4, hostname, expected):
    assert bootstrap.slurm_node_name(SHOW_NODES, ipv4, hostname) == expected


class FakeSlurm:
    """scontrol as a recording fake; `fail_update` makes changes to the node itself fail."""

    def __init__(self, fail_update: bool = False):
        self.calls: list[list[str]] = []
        self.fail_update = fail_update

    def __call__(self, argv: list[str]) -> str:
        self.calls.append(argv)
        if argv[1:] == ["-o", "show", "nodes"]:
            return SHOW_NODES
        if self.fail_update:
            raise subprocess.CalledProcessError(1, argv, stderr="Invalid user for SlurmUser slurm, update denied")
        return ""


ARGS = ["--package", "s3://assets/pkg.zip", "--reports", REPORTS, "--region", "us-east-2"]
BURN_IN = ["--", "--instance-type", "trn2.48xlarge"]


def _bootstrap(monkeypatch, tmp_path, code: int, report: dict | None, *flags: str, slurm: FakeSlurm,
               ipv4=lambda: "10.0.1.12", started: list | None = None) -> int:
    monkeypatch.setattr(bootstrap, "INSTALL_DIR", tmp_path)
    monkeypatch.setattr(bootstrap, "fetch_package", lambda uri, region: None)
    monkeypatch.setattr(bootstrap, "run_command", slurm)
    monkeypatch.setattr(bootstrap, "local_ipv4", ipv4)
    monkeypatch.setattr(bootstrap, "short_hostname", lambda: "trainium-st-trn2-3")
    # `scontrol delete` of a hold that may not exist goes through subprocess.run directly.
    monkeypatch.setattr(bootstrap.subprocess, "run", lambda argv, **_: slurm.calls.append(argv) or
                        subprocess.CompletedProcess(argv, 0))
    monkeypatch.setattr(bootstrap, "start_in_background",
                        lambda argv, node: (started if started is not None else []).append((argv, node)))

    def run(reports, region, args, report_path):
        if report is not None:
            report_path.write_text(json.dumps(report))
        return code

    monkeypatch.setattr(bootstrap, "run_burnin", run)
    return bootstrap.main([*ARGS, *flags, *BURN_IN])


def test_a_slurm_node_is_held_then_burns_in_in_the_background(monkeypatch, tmp_path):
    slurm, started = FakeSlurm(), []
    assert _bootstrap(monkeypatch, tmp_path, 1, FAILED, "--slurm", slurm=slurm, started=started) == 0
    assert slurm.calls == [
        ["/opt/slurm/bin/scontrol", "-o", "show", "nodes"],
        ["/opt/slurm/bin/scontrol", "delete", "ReservationName=trn-kit-burn-in-trainium-st-trn2-2"],
        ["/opt/slurm/bin/scontrol", "create", "reservation", "ReservationName=trn-kit-burn-in-trainium-st-trn2-2",
         "Nodes=trainium-st-trn2-2", "StartTime=now", "Duration=UNLIMITED", "Users=root", "Flags=MAINT,IGNORE_JOBS"],
    ]
    # The background run gets the same arguments, told which node it settles.
    assert started == [([*ARGS, *BURN_IN], "trainium-st-trn2-2")]


def test_the_background_run_drains_a_failed_node_with_a_short_reason_then_lifts_the_hold(monkeypatch, tmp_path):
    slurm = FakeSlurm()
    assert _bootstrap(monkeypatch, tmp_path, 1, FAILED, "--slurm-node", "trainium-st-trn2-2", slurm=slurm) == 0
    drain, release = slurm.calls
    command, reason = drain[:-1], drain[-1]
    assert command == ["/opt/slurm/bin/scontrol", "update", "NodeName=trainium-st-trn2-2", "State=DRAIN"]
    assert reason == (
        "Reason=trn-burnin failed: core 17 (device 2) reached 20.0 TFLOPS bf16, below 70% of the 78.6 "
        "TFLOPS peak; device 0 HBM has 1 uncorrectable ECC events (counter 'mem_ecc_uncorr...; "
        "report s3://reports/burn-in/")
    assert len(reason) - len("Reason=") == bootstrap.MAX_DRAIN_REASON
    assert release == ["/opt/slurm/bin/scontrol", "delete", "ReservationName=trn-kit-burn-in-trainium-st-trn2-2"]


def test_the_background_run_puts_a_passed_node_in_service(monkeypatch, tmp_path):
    slurm = FakeSlurm()
    passed = {"verdict": {"passed": True, "failures": []}}
    assert _bootstrap(monkeypatch, tmp_path, 0, passed, "--slurm-node", "trainium-st-trn2-2", slurm=slurm) == 0
    assert slurm.calls == [["/opt/slurm/bin/scontrol", "delete", "ReservationName=trn-kit-burn-in-trainium-st-trn2-2"]]


def test_no_report_still_says_why_and_metadata_failure_falls_back_to_the_host_name(monkeypatch, tmp_path):
    def no_metadata():
        raise OSError("timed out")

    slurm, started = FakeSlurm(), []
    assert _bootstrap(monkeypatch, tmp_path, 3, None, "--slurm", slurm=slurm, ipv4=no_metadata, started=started) == 0
    assert started[0][1] == "trainium-st-trn2-3"
    slurm = FakeSlurm()
    _bootstrap(monkeypatch, tmp_path, 3, None, "--slurm-node", "trainium-st-trn2-3", slurm=slurm)
    assert slurm.calls[0][2:] == ["NodeName=trainium-st-trn2-3", "State=DRAIN",
                                  "Reason=trn-burnin failed: exit 3, no report; report s3://reports/burn-in/"]


def test_a_hold_or_drain_that_fails_is_reported_and_never_fails_the_bootstrap(monkeypatch, tmp_path, capsys):
    started = []
    assert _bootstrap(monkeypatch, tmp_path, 1, FAILED, "--slurm", slurm=FakeSlurm(fail_update=True),
                      started=started) == 0
    assert "could not hold Slurm node trainium-st-trn2-2 for the burn-in (CalledProcessError: Invalid user" \
        in capsys.readouterr().out
    assert started  # the burn-in still runs
    assert _bootstrap(monkeypatch, tmp_path, 1, FAILED, "--slurm-node", "trainium-st-trn2-2",
                      slurm=FakeSlurm(fail_update=True)) == 0
    assert "update NodeName=trainium-st-trn2-2 failed for Slurm node trainium-st-trn2-2 (CalledProcessError" \
        in capsys.readouterr().out


def test_without_slurm_the_exit_code_is_the_burn_ins(monkeypatch, tmp_path):
    slurm = FakeSlurm()
    assert _bootstrap(monkeypatch, tmp_path, 1, FAILED, slurm=slurm) == 1
    assert slurm.calls == []


class Exec(Exception):
    """os.execv does not return; the stub stops the bootstrap where the real call would replace it."""


def test_cluster_test_mode_fetches_the_package_then_becomes_the_cluster_test(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bootstrap, "INSTALL_DIR", tmp_path)
    fetched, execs = [], []
    monkeypatch.setattr(bootstrap, "fetch_package", lambda uri, region: fetched.append((uri, region)))
    monkeypatch.setattr(bootstrap, "run_burnin", pytest.fail)
    monkeypatch.setattr(bootstrap, "KubernetesNode", pytest.fail)

    def execv(path, argv):
        execs.append((path, argv))
        raise Exec

    monkeypatch.setattr(bootstrap.os, "execv", execv)
    arguments = ["--nodes", "4", "--rendezvous", "s3://reports/cluster-test/run-1/", "--index", "2",
                 "--pod-ip", "10.0.1.12", "--instance-type", "trn2.48xlarge", "--region", "us-east-2"]
    with pytest.raises(Exec):
        bootstrap.main(["--package", "s3://assets/pkg.zip", "--region", "us-east-2", "--cluster-test", "--",
                        *arguments])
    launcher = str(tmp_path / "bin" / "trn-burnin")
    assert fetched == [("s3://assets/pkg.zip", "us-east-2")]
    assert execs == [(launcher, [launcher, "cluster-test", *arguments])]
    assert capsys.readouterr().out == f"running: {' '.join([launcher, 'cluster-test', *arguments])}\n"


@pytest.mark.parametrize("flags, message", [
    ([], "the burn-in needs --reports"),
    (["--cluster-test", "--slurm"], "--kubernetes-node and --slurm are for the burn-in, not --cluster-test"),
    (["--cluster-test", "--kubernetes-node", "ip-10-0-1-12"],
     "--kubernetes-node and --slurm are for the burn-in, not --cluster-test"),
])
def test_mode_usage_errors_stop_before_any_download(monkeypatch, capsys, flags, message):
    monkeypatch.setattr(bootstrap, "fetch_package", pytest.fail)
    with pytest.raises(SystemExit) as exit_info:
        bootstrap.main(["--package", "s3://assets/pkg.zip", "--region", "us-east-2", *flags, "--", "--nodes", "2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(f": error: {message}\n")


class FakeNodeApi:
    """The in-cluster API as KubernetesNode calls it: one Node, with EKS's provider id."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def __call__(self, method: str, url: str, body: dict | None = None, content_type: str = "") -> dict:
        self.calls.append((method, url.rsplit("/nodes/", 1)[-1]))
        return {
            "metadata": {"resourceVersion": "7"},
            "spec": {"providerID": "aws:///us-east-2b/i-0abc123def4567890", "taints": []},
        }


def test_on_eks_the_instance_id_comes_from_the_node_not_instance_metadata(monkeypatch, tmp_path):
    # Pods reach no instance metadata (hop limit 1): the burn-in is told its instance.
    monkeypatch.setattr(bootstrap, "INSTALL_DIR", tmp_path)
    monkeypatch.setattr(bootstrap, "fetch_package", lambda uri, region: None)
    api = FakeNodeApi()
    real = bootstrap.KubernetesNode

    def node(name):
        found = real.__new__(real)
        found.url = f"https://kubernetes.default.svc/api/v1/nodes/{name}"
        found._call = api
        return found

    monkeypatch.setattr(bootstrap, "KubernetesNode", node)
    seen = []
    monkeypatch.setattr(bootstrap, "run_burnin", lambda reports, region, args, path: seen.append(args) or 0)
    assert bootstrap.main(["--package", "s3://assets/pkg.zip", "--reports", REPORTS, "--region", "us-east-2",
                           "--kubernetes-node", "ip-10-0-1-12", "--", "--instance-type", "trn2.48xlarge"]) == 0
    assert seen == [["--instance-type", "trn2.48xlarge", "--instance-id", "i-0abc123def4567890"]]
    assert api.calls[0] == ("GET", "ip-10-0-1-12")
    assert ("PATCH", "ip-10-0-1-12") in api.calls  # the verdict is recorded on the same Node
