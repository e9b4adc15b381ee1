"""Cluster all-reduce without Slurm: pods find each other through S3 and nccom-test reaches them over SSH.

On EKS the handover gate's second stage is an Indexed Job with one pod per passed node. They share
one S3 folder, the run prefix ``s3://<reports bucket>/cluster-test/<run id>/``:

- ``launcher.pub``: the public SSH key of the pod with completion index 0, which runs nccom-test;
- ``hosts/<index>.json``: each other pod's address, written once its sshd accepts that key, or why
  that pod cannot take part (``{"index": i, "error": "..."}``) when its sshd does not start;
- ``result.json``: the verdict (cluster_test_schema.json), which the gate waits for.

The launcher (index 0) creates a key pair, starts its own sshd with that key (nccom-test may ssh to
its own host too), publishes the key, waits until every other pod registered or reported an error,
checks it can log in to each, then runs nccom-test on ``--hosts`` <its own address> <the others in
index order> and puts the verdict. Anything failing before nccom-test still gives a verdict, naming
the pod and address. Every other pod waits for the key, authorises it in its own sshd, registers,
and waits for the verdict: its exit code says only whether a verdict came, the launcher's says what
it is. A pod whose sshd does not start registers its error instead, so the launcher need not wait
out the rendezvous to fail.

The Job may give every pod an absolute deadline (``not_after``, on the monotonic clock here), after
which Kubernetes kills them all. The launcher then ends its rendezvous early enough for nccom-test
and its verdict to fit before it; the other pods wait for the key no longer and for the verdict
until then, however late pod 0 started.

Each pod runs an sshd of its own configuration (the image's /etc/ssh/sshd_config is left alone),
which hands sessions the container's PATH and LD_LIBRARY_PATH and the EFA environment the Job sets:
sshd does not pass on the environment a container starts with, and nccom-test's remote side needs
the Neuron tools, the EFA and MPI libraries, and libfabric's EFA provider with device RDMA. The launcher's ssh client skips host key checks through its own
``~/.ssh/config`` (SSH_CLIENT_CONFIG), not the image's, since nccom-test's mpirun runs plain ssh.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, TypeVar

from trn_burnin.collective import EFA_ENVIRONMENT, NCCOM_TIMEOUT_S, HostsPlacement
from trn_burnin.publish import ClientFactory, parse_s3_uri, put_s3_object

LAUNCHER_KEY_NAME = "launcher.pub"
HOSTS_DIR = "hosts/"
RESULT_NAME = "result.json"
LAUNCHER_INDEX = 0
DEFAULT_RENDEZVOUS_SECONDS = 600.0
POLL_SECONDS = 5.0
# After the rendezvous and nccom-test: the launcher's SSH checks, its verdict and the upload.
RESULT_GRACE_SECONDS = 60.0
# What the launcher still needs once its rendezvous is over.
AFTER_RENDEZVOUS_SECONDS = NCCOM_TIMEOUT_S + RESULT_GRACE_SECONDS
SSH_PORT = 22  # nccom-test's ssh, through mpirun, uses the default port
SSH_CONNECT_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 60  # ssh-keygen, sshd's start and one SSH check
MAX_PARALLEL_PROBES = 32
SSHD = "/usr/sbin/sshd"
SSHD_STATE_DIR = Path("/tmp/trn-burnin-sshd")
# Debian's and Ubuntu's sshd refuses to start without it; images often lack it, as no init script ran.
SSHD_PRIVSEP_DIR = Path("/run/sshd")
# The launcher's ~/.ssh/config, for the probe's ssh and mpirun's alike. Pods' addresses are new every
# run and their host keys are generated for it, so there is no known host key to check them against.
# LogLevel ERROR: else "Warning: Permanently added ..." on every login could be the probe's last line.
SSH_CLIENT_CONFIG = """\
# Written by trn_burnin.rendezvous for the cluster all-reduce.
Host *
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
"""
# What nccom-test's remote side needs from the container's environment (see the module docstring).
SESSION_VARIABLES = ("PATH", "LD_LIBRARY_PATH", *EFA_ENVIRONMENT)

T = TypeVar("T")


class SshError(Exception):
    """An SSH step failed; the message quotes the command's last words."""


class PodReportedError(Exception):
    """A pod registered why it cannot take part instead of its address."""


@dataclass(frozen=True)
class Pod:
    index: int
    ip: str
    nodes: int

    @property
    def name(self) -> str:
        return f"pod {self.index} at {self.ip}"


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Clock:
    """Seconds from a monotonic clock, and how to wait between two looks at S3."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    poll_s: float = POLL_SECONDS

    def poll(self, look: Callable[[], T], done: Callable[[T], bool], deadline: float) -> T:
        """``look()`` until ``done`` with its answer or the deadline passes; the last answer."""
        while True:
            answer = look()
            if done(answer) or self.now() >= deadline:
                return answer
            self.sleep(min(self.poll_s, max(deadline - self.now(), 0.0)))


@dataclass(frozen=True)
class RunFolder:
    """The run prefix in S3 that the pods share."""

    bucket: str
    prefix: str
    clients: ClientFactory

    @classmethod
    def from_uri(cls, uri: str, clients: ClientFactory) -> "RunFolder":
        return cls(*parse_s3_uri(uri), clients)

    @cached_property
    def s3(self) -> Any:  # once: the pods look every few seconds
        return self.clients("s3")

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def names(self, under: str = "") -> set[str]:
        """Object names (relative to the prefix) starting with ``under``."""
        names, token = set(), {}
        while True:
            page = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + under, **token)
            names.update(item["Key"][len(self.prefix):] for item in page.get("Contents", ()))
            if not page.get("IsTruncated"):
                return names
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def read(self, name: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()

    def read_if_present(self, name: str) -> bytes | None:
        return self.read(name) if name in self.names(name) else None

    def put_text(self, name: str, text: str) -> str:
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=text.encode(), ContentType="text/plain")
        return self.uri(name)

    def put_json(self, name: str, document: Mapping[str, Any]) -> str:
        return put_s3_object(document, self.uri(name), lambda service: self.s3)


def host_name(index: int) -> str:
    return f"{HOSTS_DIR}{index}.json"


def registered(folder: RunFolder) -> set[int]:
    """Indexes of the pods whose address, or error, is in the folder."""
    pattern = re.escape(HOSTS_DIR) + r"(\d+)\.json"
    return {int(match[1]) for name in folder.names(HOSTS_DIR) if (match := re.fullmatch(pattern, name))}


class Ssh(Protocol):
    def create_key(self) -> str:
        """Create this pod's client key pair; the public key line."""

    def start_server(self, authorized_key: str) -> None:
        """Start an sshd that lets root in with ``authorized_key`` only; SshError when it does not."""

    def probe(self, ip: str) -> str | None:
        """Log in to ``ip`` as root and run ``true``: None when that worked, else why not."""


def _pods(indexes: Iterable[int]) -> str:
    indexes = sorted(indexes)
    return ("pod " if len(indexes) == 1 else "pods ") + ", ".join(map(str, indexes))


def _address(folder: RunFolder, index: int) -> str:
    """The address pod ``index`` registered; PodReportedError with the error it registered instead,
    ValueError when its document is neither."""
    try:
        document = json.loads(folder.read(host_name(index)))
        if document["index"] == index and isinstance(document.get("error"), str):
            raise PodReportedError(document["error"])
        ip = document["ip"] if document["index"] == index else None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from error
    if not isinstance(ip, str) or not is_ipv4(ip):
        raise ValueError(f"no IPv4 address for index {index} in {document}")
    return ip


def _wait_s(seconds: float, start: float, end: float | None) -> float:
    """``seconds``, or fewer so that a wait from ``start`` is over by ``end``; never negative."""
    return seconds if end is None else max(min(seconds, end - start), 0.0)


def lead(pod: Pod, folder: RunFolder, ssh: Ssh, clock: Clock, rendezvous_s: float,
         run_test: Callable[[HostsPlacement], dict[str, Any]],
         not_run: Callable[[list[str]], dict[str, Any]], not_after: float | None = None) -> dict[str, Any]:
    """The launcher's part (index 0): the result document, from ``run_test`` once every pod is
    reachable, else from ``not_run`` with what went wrong. The caller stores it. ``not_after`` (on
    ``clock``) is when the Job ends: the rendezvous stops early enough for nccom-test to fit before."""
    start = clock.now()
    wait_s = _wait_s(rendezvous_s, start, None if not_after is None else not_after - AFTER_RENDEZVOUS_SECONDS)
    try:
        public_key = ssh.create_key()
        ssh.start_server(public_key)
    except SshError as error:
        return not_run([f"cannot start SSH on {pod.name}: {error}"])
    print(f"published the launcher's SSH key: {folder.put_text(LAUNCHER_KEY_NAME, public_key)}", flush=True)
    others = set(range(1, pod.nodes))
    print(f"waiting up to {wait_s:.0f} s for {_pods(others)} to register under {folder.uri(HOSTS_DIR)}",
          flush=True)
    present = clock.poll(lambda: registered(folder), others.issubset, start + wait_s)
    failures = []
    if not others.issubset(present):
        failures.append(f"{_pods(others - present)} of {pod.nodes} did not register within {wait_s:.0f} s "
                        "(see those pods of the cluster-test Job: unscheduled, or their logs say why)")
    ips = {pod.index: pod.ip}
    for index in sorted(others & present):
        try:
            ips[index] = _address(folder, index)
        except PodReportedError as error:
            failures.append(f"pod {index} could not take part: {error}")
        except ValueError as error:
            failures.append(f"pod {index} registered no usable address at {folder.uri(host_name(index))} ({error})")
    if failures:
        return not_run(failures)
    with ThreadPoolExecutor(max_workers=min(len(ips), MAX_PARALLEL_PROBES)) as pool:
        answers = dict(zip(ips, pool.map(ssh.probe, ips.values())))
    unreachable = [f"cannot reach pod {index} at {ips[index]} over SSH: {answers[index]}"
                   for index in sorted(ips) if answers[index] is not None]
    if unreachable:
        return not_run(unreachable)
    hosts = tuple(ips[index] for index in sorted(ips))
    print(f"all {pod.nodes} pods reachable over SSH; running nccom-test on {' '.join(hosts)}", flush=True)
    return run_test(HostsPlacement(hosts))


def join(pod: Pod, folder: RunFolder, ssh: Ssh, clock: Clock, rendezvous_s: float,
         not_after: float | None = None) -> tuple[int, str]:
    """Any other pod's part: (exit code, what happened). 0 once the launcher put its verdict.
    ``not_after`` (on ``clock``) is when the Job ends: the pod waits for the key no longer, and for the
    verdict until then."""
    start = clock.now()
    key_wait_s = _wait_s(rendezvous_s, start, not_after)
    key = clock.poll(lambda: folder.read_if_present(LAUNCHER_KEY_NAME), lambda found: found is not None,
                     start + key_wait_s)
    if key is None:
        return 1, (f"no SSH key from the launcher (pod 0) at {folder.uri(LAUNCHER_KEY_NAME)} "
                   f"within {key_wait_s:.0f} s")
    try:
        ssh.start_server(key.decode())
    except SshError as error:
        message = f"cannot start SSH on {pod.name}: {error}"
        where = folder.put_json(host_name(pod.index), {"index": pod.index, "error": message})
        print(f"told the launcher this pod cannot take part: {where}", flush=True)
        return 1, message
    where = folder.put_json(host_name(pod.index), {"index": pod.index, "ip": pod.ip})
    registered_at = clock.now()
    # The launcher's rendezvous began before it published the key, so it needs at most this from here.
    wait_s = rendezvous_s + AFTER_RENDEZVOUS_SECONDS if not_after is None else max(not_after - registered_at, 0.0)
    print(f"registered {pod.ip}: {where}; waiting up to {wait_s:.0f} s for the launcher's verdict", flush=True)
    if not clock.poll(lambda: RESULT_NAME in folder.names(RESULT_NAME), bool, registered_at + wait_s):
        return 1, f"no result from the launcher (pod 0) within {wait_s:.0f} s"
    return 0, f"the launcher (pod 0) put its verdict at {folder.uri(RESULT_NAME)}"


Runner = Callable[[Sequence[str], float], subprocess.CompletedProcess]


def run_command(argv: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess:
    """``argv`` without a shell, output captured; a command that cannot start or finish exits 255."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 255, "", f"{argv[0]} did not finish within {timeout_s:g} s")
    except OSError as error:
        return subprocess.CompletedProcess(argv, 255, "", f"cannot run {argv[0]}: {error}")


def _last_line(*texts: str) -> str | None:
    lines = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


@contextmanager
def _files_of(program: str) -> Iterator[None]:
    """A file SSH needs that cannot be written is an SSH failure the pods report, not a crash."""
    try:
        yield
    except OSError as error:
        raise SshError(f"cannot write the files of {program}: {error}") from error


@dataclass
class OpenSsh:
    """OpenSSH's ssh-keygen, sshd and ssh, as root in a pod."""

    state_dir: Path = SSHD_STATE_DIR
    port: int = SSH_PORT
    privsep_dir: Path = SSHD_PRIVSEP_DIR
    home: Path = field(default_factory=Path.home)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    run: Runner = run_command

    def _keygen(self, path: Path) -> None:
        for stale in (path, path.with_name(path.name + ".pub")):  # ssh-keygen would ask before overwriting
            stale.unlink(missing_ok=True)
        done = self.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], COMMAND_TIMEOUT_S)
        if done.returncode != 0:
            raise SshError(f"ssh-keygen exited {done.returncode}: {_last_line(done.stderr, done.stdout)}")

    def create_key(self) -> str:
        ssh_dir = self.home / ".ssh"
        with _files_of("the SSH client"):
            ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            ssh_dir.chmod(0o700)
        key = ssh_dir / "id_ed25519"  # where ssh, and so mpirun, looks without being told
        self._keygen(key)
        with _files_of("the SSH client"):
            config = ssh_dir / "config"  # read before the image's /etc/ssh/ssh_config, and so it wins
            config.write_text(SSH_CLIENT_CONFIG)
            config.chmod(0o600)
            return key.with_name(key.name + ".pub").read_text().strip()

    def config_text(self) -> str:
        state = self.state_dir
        session = [f'"{name}={self.environ[name]}"' for name in SESSION_VARIABLES if name in self.environ]
        lines = [
            "# Written by trn_burnin.rendezvous for the cluster all-reduce.",
            f"Port {self.port}",
            f"HostKey {state / 'host_key'}",
            f"AuthorizedKeysFile {state / 'authorized_keys'}",
            f"PidFile {state / 'sshd.pid'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            # No PAM stack to satisfy in a container; the key is the only way in.
            "UsePAM no",
            # AuthorizedKeysFile's path runs through /tmp, which is world-writable: StrictModes would refuse it.
            "StrictModes no",
            # sshd keeps only the first SetEnv line: every variable goes on this one.
            *([f"SetEnv {' '.join(session)}"] if session else []),
        ]
        return "\n".join(lines) + "\n"

    def start_server(self, authorized_key: str) -> None:
        state = self.state_dir
        with _files_of("sshd"):
            self.privsep_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            state.mkdir(mode=0o700, parents=True, exist_ok=True)
            (state / "authorized_keys").write_text(authorized_key.strip() + "\n")
        self._keygen(state / "host_key")
        config, log = state / "sshd_config", state / "sshd.log"
        with _files_of("sshd"):
            config.write_text(self.config_text())
        done = self.run([SSHD, "-f", str(config), "-E", str(log)], COMMAND_TIMEOUT_S)  # returns once daemonised
        if done.returncode != 0:
            logged = log.read_text() if log.exists() else ""
            raise SshError(f"{SSHD} exited {done.returncode}: {_last_line(done.stderr, logged) or 'no output'}")

    def probe(self, ip: str) -> str | None:
        # No host key options: ~/.ssh/config must let it in, as it must let in mpirun's plain ssh.
        done = self.run(["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
                         "-p", str(self.port), f"root@{ip}", "true"], COMMAND_TIMEOUT_S)
        return None if done.returncode == 0 else _last_line(done.stderr) or f"ssh exited {done.returncode}"
