"""constructs/slurm/node/install_neuron.sh, run offline with the arguments the stack gives it.

dpkg-query, modinfo and everything that would change the machine (apt-get, apt-mark, modprobe,
curl) are stubs on PATH; the venv is a real one without pip whose packages are bare metadata.
Covered: argument checks, version matching, --check, and that a node already at its pins
installs nothing.
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

from trn_burnin.device import KIT_NRTPY_PYTHON
from trn_constructs.image import ImageVersions
from trn_constructs.slurm.neuron_install import NEURON_INSTALL_SCRIPT

STUBS = {
    # dpkg-query -W -f=FORMAT NAME: "<status> <version>" from the state directory.
    "dpkg-query": 'cat "$STUB_STATE/debs/$3" 2>/dev/null || { echo "no package $3" >&2; exit 1; }',
    "modinfo": 'cat "$STUB_STATE/driver" 2>/dev/null',
}
# Anything that would change the machine is recorded and fails.
RECORDED = ("apt-get", "apt-mark", "modprobe", "curl", "gpg")


@pytest.fixture(scope="module")
def stack_args(default_stack) -> list[str]:
    """The OnNodeStart arguments exactly as the synthesized queue passes them."""
    (cluster,) = [
        resource for resource in default_stack.template_json["Resources"].values()
        if resource["Type"] == "Custom::PclusterCluster"
    ]
    (queue,) = cluster["Properties"]["ClusterConfiguration"]["Scheduling"]["SlurmQueues"]
    return queue["CustomActions"]["OnNodeStart"]["Args"]


@pytest.fixture(scope="module")
def head_node_args(default_stack) -> list[str]:
    """The head node's OnNodeConfigured arguments: the same pins without the driver."""
    (cluster,) = [
        resource for resource in default_stack.template_json["Resources"].values()
        if resource["Type"] == "Custom::PclusterCluster"
    ]
    _, install = cluster["Properties"]["ClusterConfiguration"]["HeadNode"]["CustomActions"]["OnNodeConfigured"]["Sequence"]
    return install["Args"]


@pytest.fixture(scope="module")
def pinned_venv(tmp_path_factory) -> Path:
    """A venv whose metadata lists every pinned Python package at its pin."""
    path = tmp_path_factory.mktemp("venv") / "aws_neuronx_venv_trn_kit"
    venv.create(path, with_pip=False)
    versions = ImageVersions.load()
    pins = {**versions.neuron_python_packages, **versions.burn_in_python_packages}
    for name, version in pins.items():
        add_distribution(path, name, version)
    return path


def add_distribution(path: Path, name: str, version: str) -> None:
    purelib = subprocess.run(
        [path / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    dist_info = Path(purelib) / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    (dist_info / "METADATA").write_text(metadata)


class Node:
    """A fake Ubuntu node: installed debs, the driver, the stubs, and what got called."""

    def __init__(self, root: Path):
        self.state = root / "state"
        (self.state / "debs").mkdir(parents=True)
        self.bin = root / "bin"
        self.bin.mkdir()
        for name, body in STUBS.items():
            self._stub(name, body)
        for name in RECORDED:
            self._stub(name, f'echo "{name} $*" >> "$STUB_STATE/calls"; exit 1')
        versions = ImageVersions.load()
        # Everything at its pin, the way Neuron's apt repository versions some packages.
        for name, version in versions.neuron_packages.items():
            suffix = "" if name == "aws-neuronx-dkms" else "-0a1b2c3d4"
            self.deb(name, f"installed {version}{suffix}")
        self.driver(versions.neuron_packages["aws-neuronx-dkms"])

    def _stub(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def deb(self, name: str, status_and_version: str | None) -> None:
        path = self.state / "debs" / name
        if status_and_version is None:
            path.unlink()
        else:
            path.write_text(status_and_version)

    def driver(self, version: str | None) -> None:
        path = self.state / "driver"
        if version is None:
            path.unlink()
        else:
            path.write_text(version + "\n")

    @property
    def calls(self) -> list[str]:
        path = self.state / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def run(self, *args: str) -> subprocess.CompletedProcess:
        environment = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "STUB_STATE": str(self.state),
        }
        return subprocess.run(
            ["bash", str(NEURON_INSTALL_SCRIPT), *args],
            env=environment, capture_output=True, text=True, timeout=60, check=False,
        )


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(tmp_path)


@pytest.fixture(scope="module")
def pinned_runtime_venv(tmp_path_factory) -> Path:
    """nrtpy's venv, at its pin."""
    path = tmp_path_factory.mktemp("runtime") / "nrtpy-venv"
    venv.create(path, with_pip=False)
    for name, version in ImageVersions.load().neuron_runtime_python_packages.items():
        add_distribution(path, name, version)
    return path


@pytest.fixture
def args(stack_args, pinned_venv, pinned_runtime_venv) -> list[str]:
    """The stack's arguments with the venvs moved to the test's."""
    moved = list(stack_args)
    moved[moved.index("--venv") + 1] = str(pinned_venv)
    moved[moved.index("--runtime-venv") + 1] = str(pinned_runtime_venv)
    return moved


def test_nrtpy_gets_a_venv_of_its_own_at_its_pin(stack_args):
    nrtpy = ImageVersions.load().neuron_runtime_python_packages["nrtpy"]
    assert stack_args[stack_args.index("--runtime-venv") + 1] == KIT_NRTPY_PYTHON.removesuffix("/bin/python")
    assert stack_args[stack_args.index("--runtime-pip") + 1] == f"nrtpy=={nrtpy}"
    assert f"nrtpy=={nrtpy}" not in stack_args[:stack_args.index("--runtime-venv")]


def test_check_fails_when_nrtpy_is_off_its_pin(node, args, tmp_path):
    off = tmp_path / "old-nrtpy"
    venv.create(off, with_pip=False)
    add_distribution(off, "nrtpy", "2.0.0")
    moved = list(args)
    moved[moved.index("--runtime-venv") + 1] = str(off)
    result = node.run("--check", *moved)
    nrtpy = ImageVersions.load().neuron_runtime_python_packages["nrtpy"]
    assert result.returncode == 1 and f"venv {off}: want nrtpy=={nrtpy}" in result.stderr


def test_check_passes_when_everything_is_at_its_pin(node, args):
    result = node.run("--check", *args)
    assert result.returncode == 0, result.stderr
    # A build suffix after the pinned version is the same version.
    assert "aws-neuronx-runtime-lib " in result.stderr and "-0a1b2c3d4: at pin" in result.stderr
    assert result.stderr.rstrip().endswith("everything at its pin")
    assert node.calls == []


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("installed 0.0.1.0", "want {pin}, have installed 0.0.1.0"),
        # The pin as a prefix of a longer version is another version.
        ("installed {pin}1", "want {pin}, have installed {pin}1"),
        # Removed, only its configuration left: dpkg still reports the version.
        ("config-files {pin}", "want {pin}, have config-files {pin}"),
        (None, "want {pin}, have nothing"),
    ],
)
def test_check_fails_and_names_a_package_off_its_pin(node, args, state, reason):
    pin = ImageVersions.load().neuron_packages["aws-neuronx-collectives"]
    node.deb("aws-neuronx-collectives", state and state.format(pin=pin))
    result = node.run("--check", *args)
    assert result.returncode == 1
    assert f"aws-neuronx-collectives: {reason.format(pin=pin)}" in result.stderr
    assert "FAILED" in result.stderr
    assert node.calls == []


def test_check_fails_when_the_driver_is_not_built_for_the_running_kernel(node, args):
    node.driver(None)
    result = node.run("--check", *args)
    assert result.returncode == 1
    assert "neuron driver: not built for kernel" in result.stderr


def test_check_fails_when_a_python_package_is_off_its_pin(node, args, tmp_path):
    versions = ImageVersions.load()
    path = tmp_path / "venv"
    venv.create(path, with_pip=False)
    add_distribution(path, "neuronx-cc", versions.neuron_python_packages["neuronx-cc"])
    add_distribution(path, "nki", "0.0.1")
    moved = list(args)
    moved[moved.index("--venv") + 1] = str(path)
    result = node.run("--check", *moved)
    assert result.returncode == 1
    nki = f"nki=={versions.neuron_python_packages['nki']}"
    boto3 = f"boto3=={versions.burn_in_python_packages['boto3']}"
    assert f"venv {path}: want {nki} {boto3}" in result.stderr


def test_a_node_already_at_its_pins_installs_nothing(node, args):
    result = node.run(*args)
    assert result.returncode == 0, result.stderr
    assert node.calls == []  # no apt-get, no apt-mark, no modprobe


def test_a_failing_install_step_fails_the_node(node, args):
    # Off its pin, so the script installs: its first step (fetching the Neuron repository key,
    # or apt-get where the repository is configured) fails here, and so must the node.
    node.deb("aws-neuronx-tools", None)
    result = node.run(*args)
    assert result.returncode != 0
    assert {call.split()[0] for call in node.calls} in ({"curl", "gpg"}, {"apt-get"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a[a.index("--release") + 2:], "--release is required"),
        (lambda a: [*a, "--deb", "aws-neuronx-dkms"], "--deb wants NAME=VERSION"),
        (lambda a: [*a, "--pip", "nki=0.7"], "--pip wants NAME==VERSION"),
        (lambda a: [*a, "--deb", "x=1; reboot"], "--deb wants NAME=VERSION"),
        (lambda a: [*a, "--force"], "unknown argument: --force"),
        (lambda a: [*a, "--venv"], "--venv needs a value"),
        (lambda a: [*a, "--venv", "relative/venv"], "--venv wants an absolute path"),
        (lambda a: [*a, "--runtime-pip", "nrtpy"], "--runtime-pip wants NAME==VERSION"),
        (lambda a: [*a, "--runtime-venv", a[a.index("--venv") + 1]], "--runtime-venv must differ from --venv"),
    ],
)
def test_bad_arguments_exit_2_before_touching_anything(node, args, change, message):
    result = node.run(*change(args))
    assert result.returncode == 2
    assert message in result.stderr
    assert node.calls == []


def test_the_head_node_needs_no_driver_and_checks_none(node, head_node_args, pinned_venv):
    # A head node (no Neuron devices, no driver, no driver package) is at its pins.
    node.deb("aws-neuronx-dkms", None)
    node.driver(None)
    moved = list(head_node_args)
    moved[moved.index("--venv") + 1] = str(pinned_venv)
    result = node.run("--check", *moved)
    assert result.returncode == 0, result.stderr
    assert "aws-neuronx-dkms" not in result.stderr and "neuron driver" not in result.stderr
    assert node.run(*moved).returncode == 0
    assert node.calls == []  # nothing installed, no modprobe
