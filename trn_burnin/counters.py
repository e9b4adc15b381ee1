"""Hardware error evidence: Neuron sysfs ECC counters and NEURON_HW_ERR kernel-log lines."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

# Neuron sysfs (Neuron Sysfs User Guide): one directory per device, neuron<N>/, with counters such as
# stats/hardware/{mem_ecc_uncorrected, mem_ecc_repairable_uncorrected, sram_ecc_uncorrected}, each
# a directory holding ``total`` (since driver load) and ``present``. Newer drivers add *_corrected
# counters and Neuron driver 2.31 moved some nodes, so every *ecc* counter below the device
# directory is read, wherever it sits.
SYSFS_ROOT = Path("/sys/devices/virtual/neuron_device")
_DEVICE_DIR = re.compile(r"^neuron(\d+)$")
_MAX_DEPTH = 4  # sysfs has symlink cycles; the counters sit a few levels down

# e.g. "NEURON_HW_ERR=HBM_UNCORRECTABLE_ERROR instance-id=i-... nd-id=0 nc-id=0 ... action=..."
_HW_ERR = re.compile(r"NEURON_HW_ERR=(\S+)")
_FIELD = re.compile(r"\b(nd-id|nc-id)=(\d+)")

CounterTotals = Mapping[tuple[int, str], int]  # (device, counter name) -> total


def read_sysfs_counters(root: Path = SYSFS_ROOT) -> dict[tuple[int, str], int]:
    totals: dict[tuple[int, str], int] = {}
    if not root.is_dir():
        return totals
    for device_dir in sorted(root.iterdir()):
        match = _DEVICE_DIR.match(device_dir.name)
        if not match:
            continue
        base_depth = len(device_dir.parts)
        for path, dirs, files in os.walk(device_dir, followlinks=False):
            if len(Path(path).parts) - base_depth >= _MAX_DEPTH:
                dirs.clear()
            name = Path(path).name
            if "ecc" in name and "total" in files:
                text = (Path(path) / "total").read_text().strip()
                totals[(int(match.group(1)), name)] = int(text or 0)
    return totals


@dataclass(frozen=True)
class CounterChange:
    device: int
    name: str
    before: int
    after: int

    @property
    def memory(self) -> str:
        return "HBM" if self.name.startswith("mem") else "SRAM" if self.name.startswith("sram") else "other"

    @property
    def uncorrectable(self) -> bool:
        # "repairable uncorrected" HBM events still delivered bad data: they count as uncorrectable.
        return "uncorrected" in self.name

    @property
    def delta(self) -> int:
        return self.after - self.before


def counter_changes(before: CounterTotals, after: CounterTotals) -> tuple[CounterChange, ...]:
    """Every counter seen before or after; one missing on one side reads as 0 there."""
    keys = sorted(set(before) | set(after))
    return tuple(CounterChange(d, n, before.get((d, n), 0), after.get((d, n), 0)) for d, n in keys)


@dataclass(frozen=True)
class HwErrorLine:
    kind: str  # e.g. HBM_UNCORRECTABLE_ERROR
    device: int | None
    core: int | None
    line: str


def parse_hw_errors(log_text: str) -> tuple[HwErrorLine, ...]:
    errors = []
    for line in log_text.splitlines():
        match = _HW_ERR.search(line)
        if match:
            fields = dict(_FIELD.findall(line))
            device, core = fields.get("nd-id"), fields.get("nc-id")
            errors.append(HwErrorLine(match.group(1), None if device is None else int(device),
                                      None if core is None else int(core), line.strip()))
    return tuple(errors)
