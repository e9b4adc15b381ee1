"""The Neuron install every Slurm compute node runs before ParallelCluster configures it.

ParallelCluster boots only its own images, which carry no Neuron software, so the queue's
OnNodeStart action runs ``node/install_neuron.sh`` with the pins of ami/versions.json. On an image
that already has them (TrnAmiStack's Slurm image runs the same script at build time) it only checks.
The head node runs it too, without the driver: it has no Neuron devices, but invokes nccom-test's
slurm mode for the gate's cluster all-reduce, as the Neuron docs have it.
"""

from __future__ import annotations

from pathlib import Path

from trn_constructs.image import ImageVersions, NodeScript

NEURON_INSTALL_SCRIPT = Path(__file__).resolve().parent / "node" / "install_neuron.sh"
# The burn-in bootstrap runs the newest /opt/aws_neuronx_venv_*/bin/python (the DLAMI's naming):
# this name sorts after the DLAMI's framework venvs should an image have both.
NEURON_VENV = "/opt/aws_neuronx_venv_trn_kit"
# nrtpy's own venv, outside that glob so the bootstrap never takes it for the nki one; the burn-in
# looks for it here (trn_burnin.device.KIT_NRTPY_PYTHON).
NRTPY_VENV = "/opt/trn-kit/nrtpy-venv"


DRIVER_PACKAGE = "aws-neuronx-dkms"


def neuron_install(versions: ImageVersions, *, driver: bool = True) -> NodeScript:
    """The install script with the pinned release as its arguments; ``driver=False`` leaves out
    the Neuron driver and the burn-in's nrtpy (a node without Neuron devices: the head node)."""
    args = ["--release", versions.neuron_sdk_release, "--venv", NEURON_VENV]
    for name, version in versions.neuron_packages.items():
        if driver or name != DRIVER_PACKAGE:
            args += ["--deb", f"{name}={version}"]
    # The compiler and nki for the burn-in's kernel, and what the burn-in itself imports.
    python_packages = {**versions.neuron_python_packages, **versions.burn_in_python_packages}
    for name, version in python_packages.items():
        args += ["--pip", f"{name}=={version}"]
    if driver:
        args += ["--runtime-venv", NRTPY_VENV]
        for name, version in versions.neuron_runtime_python_packages.items():
            args += ["--runtime-pip", f"{name}=={version}"]
    return NodeScript(path=NEURON_INSTALL_SCRIPT, args=tuple(args))
