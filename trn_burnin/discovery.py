"""What the node has: Neuron devices and physical NeuronCores, from ``neuron-ls`` JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass


class DiscoveryError(ValueError):
    """neuron-ls output that cannot be understood."""


@dataclass(frozen=True)
class NeuronDevice:
    index: int
    physical_cores: int
    first_core: int  # physical index of its core 0 with LNC=1 (devices numbered in order)

    @property
    def cores(self) -> range:
        return range(self.first_core, self.first_core + self.physical_cores)


@dataclass(frozen=True)
class Topology:
    devices: tuple[NeuronDevice, ...]

    @property
    def cores(self) -> tuple[tuple[int, int], ...]:
        """(physical core, device index) for every core on the node."""
        return tuple((core, d.index) for d in self.devices for core in d.cores)


def _device_entries(document: object) -> list[dict]:
    # neuron-ls --json-output prints a list of devices. Its successor (--output-format json,
    # Neuron 2.34+) wraps them with node-level fields; accept the first list of device objects.
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for value in document.values():
            if isinstance(value, list) and value and all(isinstance(v, dict) and "neuron_device" in v for v in value):
                return value
    raise DiscoveryError("neuron-ls JSON has no list of devices with a 'neuron_device' field")


def parse_neuron_ls(text: str) -> Topology:
    """Devices and their physical cores.

    neuron-ls counts logical cores (``nc_count``) under the current logical-core configuration
    (``logical_neuroncore_config``, e.g. 2 on Trn2 by default); the burn-in runs with LNC=1, so
    each device has nc_count x logical_neuroncore_config physical cores.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DiscoveryError(f"neuron-ls output is not JSON: {error}") from error
    devices = []
    first_core = 0
    for entry in sorted(_device_entries(document), key=lambda e: e.get("neuron_device", -1)):
        try:
            index = int(entry["neuron_device"])
            physical = int(entry["nc_count"]) * int(entry.get("logical_neuroncore_config", 1))
        except (KeyError, TypeError, ValueError) as error:
            raise DiscoveryError(f"neuron-ls device entry {entry!r} lacks {error}") from error
        devices.append(NeuronDevice(index, physical, first_core))
        first_core += physical
    return Topology(tuple(devices))
