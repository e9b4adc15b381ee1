"""The device layer: everything the runner asks of the node, behind one small interface.

NeuronHost is the real node (neuron-ls, sysfs, the kernel log, one compile process per kernel
variant, then one worker process per physical NeuronCore); tests substitute fakes with the same
methods.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Mapping, Protocol, Sequence

from trn_burnin.artifacts import ARTIFACTS_ENV, CompiledVariant
from trn_burnin.counters import SYSFS_ROOT, read_sysfs_counters
from trn_burnin.measure import CoreResult
from trn_burnin.processes import Child, CoreCount, Progress, wait_all
from trn_burnin.worker import NKI, NRTPY, WorkerJob

# Logical NeuronCore size 1: each worker owns exactly one physical core (Neuron runtime settings).
WORKER_ENV = {"NEURON_LOGICAL_NC_CONFIG": "1"}
VISIBLE_CORES_ENV = "NEURON_RT_VISIBLE_CORES"
PLATFORM_TARGET_ENV = "NEURON_PLATFORM_TARGET_OVERRIDE"
# One compile of a kernel variant (and its one execution), once per node.
COMPILE_ALLOWANCE_S = 1800
# A worker's first calls: loading the NEFFs with nrtpy, or compiling both variants itself with nki.
FIRST_CALL_ALLOWANCE_S = {NRTPY: 300, NKI: COMPILE_ALLOWANCE_S}
WORKER_MARGIN_S = 300  # checks of every output, and a host shared by 128 workers
# nrtpy cannot share a virtual environment with nki, so it lives in an interpreter of its own:
# the one this variable names, else the kit's (constructs/slurm/node/install_neuron.sh), else a
# Neuron venv that has it. nrtpy loads libnrt from the Neuron runtime's library directory.
NRTPY_PYTHON_ENV = "TRN_BURNIN_NRTPY_PYTHON"
KIT_NRTPY_PYTHON = "/opt/trn-kit/nrtpy-venv/bin/python"
NEURON_VENV_PYTHONS = "/opt/aws_neuronx_venv_*/bin/python"
NEURON_RUNTIME_LIB = "/opt/aws/neuron/lib"
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # what child processes need on PYTHONPATH
NEURON_LS_COMMANDS = (["neuron-ls", "--json-output"], ["neuron-ls", "--output-format", "json"])
KERNEL_LOG_COMMANDS = (["dmesg"], ["journalctl", "-k", "-b", "--no-pager", "-o", "short"])
SOFTWARE_PACKAGES = ("nki", "neuronx-cc", "numpy", "boto3")
DRIVER_VERSION_PATH = Path("/sys/module/neuron/version")


class DeviceError(RuntimeError):
    """The node could not answer (tool missing, permission denied, ...)."""


@dataclass(frozen=True)
class KernelLoader:
    """How the workers run the kernel: NRTPY (load the node's NEFFs, device timing) in the
    interpreter ``python``, or NKI (each worker compiles the kernel itself, host timing)."""

    kind: str
    python: str
    note: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class DeviceLayer(Protocol):
    def neuron_ls(self) -> str: ...

    def hw_counters(self) -> dict[tuple[int, str], int]: ...

    def kernel_log(self) -> str: ...

    def kernel_loader(self) -> KernelLoader: ...

    def compile_kernels(self, job: WorkerJob, platform_target: str,
                        progress: Progress) -> tuple[CompiledVariant, ...]: ...

    def run_cores(self, cores: Sequence[tuple[int, int]], job: WorkerJob,
                  progress: Progress) -> list[CoreResult]: ...

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


def _prepended(env: Mapping[str, str], name: str, entry: str) -> dict[str, str]:
    """``env`` with ``entry`` first in the path list ``name``."""
    current = env.get(name)
    return {**env, name: entry + (os.pathsep + current if current else "")}


def find_nrtpy_python(candidates: Sequence[str] | None = None) -> str | None:
    """The first interpreter that imports nrtpy and numpy (what a worker needs besides trn_burnin)."""
    if candidates is None:
        named = os.environ.get(NRTPY_PYTHON_ENV)
        candidates = [*([named] if named else []), KIT_NRTPY_PYTHON, *sorted(glob.glob(NEURON_VENV_PYTHONS))]
    env = _prepended(os.environ, "LD_LIBRARY_PATH", NEURON_RUNTIME_LIB)
    for python in candidates:
        if python == sys.executable or not os.access(python, os.X_OK):
            continue
        try:
            probe = subprocess.run([python, "-c", "import nrtpy, numpy"], env=env, capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return python
    return None


class NeuronHost:
    """The real node."""

    def __init__(self, sysfs_root: Path = SYSFS_ROOT):
        self.sysfs_root = sysfs_root
        self._loader: KernelLoader | None = None

    def neuron_ls(self) -> str:
        return _first_success(NEURON_LS_COMMANDS)

    def hw_counters(self) -> dict[tuple[int, str], int]:
        return read_sysfs_counters(self.sysfs_root)

    def kernel_log(self) -> str:
        return _first_success(KERNEL_LOG_COMMANDS)

    def kernel_loader(self) -> KernelLoader:
        if self._loader is None:
            python = find_nrtpy_python()
            self._loader = KernelLoader(NRTPY, python) if python else KernelLoader(
                NKI, sys.executable,
                f"no interpreter with nrtpy (${NRTPY_PYTHON_ENV}, {KIT_NRTPY_PYTHON} or {NEURON_VENV_PYTHONS}): "
                "each worker compiles the kernel itself and is timed on the host")
        return self._loader

    def compile_kernels(self, job: WorkerJob, platform_target: str, progress: Progress) -> tuple[CompiledVariant, ...]:
        """Each variant at once, in its own process on its own core, into its own artifacts directory."""
        root = Path(tempfile.mkdtemp(prefix="trn-burnin-neff-"))
        children = []
        for core, repeat in enumerate(job.variants):
            directory = root / f"repeat-{repeat}"
            directory.mkdir()
            env = {**_prepended(os.environ, "PYTHONPATH", str(PACKAGE_PARENT)), **WORKER_ENV,
                   VISIBLE_CORES_ENV: str(core), ARTIFACTS_ENV: str(directory), PLATFORM_TARGET_ENV: platform_target}
            command = [sys.executable, "-m", "trn_burnin.artifacts", "--job", job.to_json(), "--repeat", str(repeat)]
            progress(f"compiling the repeat={repeat} kernel once for the node, on core {core}, into {directory}")
            children.append(Child(command, env, COMPILE_ALLOWANCE_S))
        compiled = []
        for repeat, child in zip(job.variants, wait_all(children)):
            line = child.result_line
            variant = CompiledVariant(**json.loads(line)) if line else CompiledVariant(
                repeat, child.timeout if child.timed_out else 0.0, None, f"the compile process {child.failure()}")
            progress(f"repeat={repeat} kernel " + (f"compiled in {variant.seconds:.1f} s" if variant.neff
                                                   else f"did not compile: {variant.error}"))
            compiled.append(variant)
        return tuple(compiled)

    def run_cores(self, cores: Sequence[tuple[int, int]], job: WorkerJob, progress: Progress) -> list[CoreResult]:
        """One worker process per physical core, all started before any is awaited."""
        python = self.kernel_loader().python if job.loader == NRTPY else sys.executable
        timeout = FIRST_CALL_ALLOWANCE_S[job.loader] + job.warmup_s + job.duration_s + WORKER_MARGIN_S
        env = _prepended(os.environ, "PYTHONPATH", str(PACKAGE_PARENT))
        if job.loader == NRTPY:
            env = _prepended(env, "LD_LIBRARY_PATH", NEURON_RUNTIME_LIB)
        counter = CoreCount(len(cores), progress)
        progress(f"starting {len(cores)} workers ({job.loader}): each loads the kernel, warms up for "
                 f"{job.warmup_s:g} s, then measures for {job.duration_s:g} s")
        children = [Child([python, "-m", "trn_burnin.worker", "--core", str(core), "--device", str(device),
                           "--job", job.to_json()], {**env, **WORKER_ENV, VISIBLE_CORES_ENV: str(core)}, timeout,
                          counter.count)
                    for core, device in cores]
        results = []
        for (core, device), child in zip(cores, wait_all(children, lambda _: counter.count("done"))):
            line = child.result_line
            results.append(CoreResult(**json.loads(line)) if line
                           else CoreResult(core=core, device=device, error=f"worker {child.failure()}"))
        return results

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
