"""The device layer: everything the runner asks of the node, behind one small interface.

NeuronHost is the real node (neuron-ls, sysfs, the kernel log, one worker process per physical
NeuronCore); tests substitute fakes with the same methods.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Protocol, Sequence

from trn_burnin.counters import SYSFS_ROOT, read_sysfs_counters
from trn_burnin.measure import CoreResult
from trn_burnin.worker import WorkerJob

# Logical NeuronCore size 1: each worker owns exactly one physical core (Neuron runtime settings).
WORKER_ENV = {"NEURON_LOGICAL_NC_CONFIG": "1"}
VISIBLE_CORES_ENV = "NEURON_RT_VISIBLE_CORES"
# Kernel compilation happens inside the worker before its warm-up starts.
COMPILE_ALLOWANCE_S = 1800
NEURON_LS_COMMANDS = (["neuron-ls", "--json-output"], ["neuron-ls", "--output-format", "json"])
KERNEL_LOG_COMMANDS = (["dmesg"], ["journalctl", "-k", "-b", "--no-pager", "-o", "short"])
SOFTWARE_PACKAGES = ("nki", "neuronx-cc", "numpy", "boto3")
DRIVER_VERSION_PATH = Path("/sys/module/neuron/version")


class DeviceError(RuntimeError):
    """The node could not answer (tool missing, permission denied, ...)."""


class DeviceLayer(Protocol):
    def neuron_ls(self) -> str: ...

    def hw_counters(self) -> dict[tuple[int, str], int]: ...

    def kernel_log(self) -> str: ...

    def run_cores(self, cores: Sequence[tuple[int, int]], job: WorkerJob) -> list[CoreResult]: ...

    def software_versions(self) -> dict[str, str | None]: ...

    def hostname(self) -> str: ...


def _first_success(commands: Sequence[list[str]]) -> str:
    problems = []
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            problems.append(f"{command[0]}: {error}")
            continue
        if done.returncode == 0:
            return done.stdout
        problems.append(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[:200]}")
    raise DeviceError("; ".join(problems))


class NeuronHost:
    """The real node."""

    def __init__(self, sysfs_root: Path = SYSFS_ROOT):
        self.sysfs_root = sysfs_root

    def neuron_ls(self) -> str:
        return _first_success(NEURON_LS_COMMANDS)

    def hw_counters(self) -> dict[tuple[int, str], int]:
        return read_sysfs_counters(self.sysfs_root)

    def kernel_log(self) -> str:
        return _first_success(KERNEL_LOG_COMMANDS)

    def run_cores(self, cores: Sequence[tuple[int, int]], job: WorkerJob) -> list[CoreResult]:
        """One worker process per physical core, all started before any is awaited."""
        timeout = job.warmup_s + job.duration_s + COMPILE_ALLOWANCE_S
        running = []
        for core, device in cores:
            env = {**os.environ, **WORKER_ENV, VISIBLE_CORES_ENV: str(core)}
            command = [sys.executable, "-m", "trn_burnin", "worker", "--core", str(core),
                       "--device", str(device), "--job", job.to_json()]
            running.append((core, device, subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        return [self._collect(core, device, process, timeout) for core, device, process in running]

    @staticmethod
    def _collect(core: int, device: int, process: subprocess.Popen, timeout: float) -> CoreResult:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return CoreResult(core=core, device=device, error=f"worker timed out after {timeout:.0f} s")
        lines = out.strip().splitlines()
        if process.returncode != 0 or not lines:
            detail = (err.strip().splitlines() or ["no output"])[-1]
            return CoreResult(core=core, device=device, error=f"worker exited {process.returncode}: {detail}")
        return CoreResult(**json.loads(lines[-1]))

    def software_versions(self) -> dict[str, str | None]:
        versions: dict[str, str | None] = {"python": sys.version.split()[0]}
        for package in SOFTWARE_PACKAGES:
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                versions[package] = None
        try:
            versions["neuron_driver"] = DRIVER_VERSION_PATH.read_text().strip()
        except OSError:
            versions["neuron_driver"] = None
        return versions

    def hostname(self) -> str:
        return socket.gethostname()
