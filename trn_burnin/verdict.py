"""Pass/fail rules. Every failure is a sentence naming the core or chip, for the report."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from trn_burnin.catalog import OVERRIDES, InstanceSpec
from trn_burnin.counters import CounterChange, HwErrorLine
from trn_burnin.discovery import Topology
from trn_burnin.measure import CoreResult
from trn_burnin.thresholds import Thresholds

@dataclass(frozen=True)
class Failure:
    rule: str
    message: str
    device: int | None = None
    core: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Evidence:
    """Everything one node's verdict is decided on."""

    spec: InstanceSpec
    dtype: str
    topology: Topology
    results: tuple[CoreResult, ...]
    counters: tuple[CounterChange, ...] = ()
    hw_errors: tuple[HwErrorLine, ...] = field(default=())


def _inventory(evidence: Evidence) -> list[Failure]:
    spec, devices = evidence.spec, evidence.topology.devices
    failures = []
    if len(devices) != spec.chips_per_instance:
        found = {d.index for d in devices}
        missing = sorted(set(range(spec.chips_per_instance)) - found)
        detail = f"; missing device index {', '.join(map(str, missing))}" if missing else ""
        failures.append(Failure("device_count", f"found {len(devices)} Neuron devices, {spec.instance_type} "
                                f"should have {spec.chips_per_instance}{detail}"))
    for device in devices:
        if device.physical_cores != spec.neuron_cores_per_chip:
            failures.append(Failure("core_count", f"device {device.index} has {device.physical_cores} physical "
                                    f"NeuronCores, expected {spec.neuron_cores_per_chip}", device.index))
    return failures


def _peak_note(evidence: Evidence) -> str:
    """What to do when the peak a core was held to is one the documents do not settle."""
    if not evidence.spec.core.peak(evidence.dtype).uncertain:
        return ""
    override = next((name for name, field in OVERRIDES.items()
                     if field == f"{evidence.dtype}_peak_tflops_per_core"), None)
    where = f": once measured, set catalogOverrides {evidence.spec.key}.{override}" if override else ""
    return f" (the catalog marks this peak UNCERTAIN{where})"


def _core_failures(evidence: Evidence, thresholds: Thresholds) -> list[Failure]:
    peak = evidence.spec.core.peak_tflops_per_core(evidence.dtype)
    measured = [r.tflops for r in evidence.results if r.tflops is not None]
    median = statistics.median(measured) if measured else 0.0
    failures = []
    for r in evidence.results:
        where = f"core {r.core} (device {r.device})"

        def fail(rule: str, message: str) -> None:
            failures.append(Failure(rule, f"{where} {message}", r.device, r.core))

        if r.error is not None:
            fail("core_error", f"did not complete the burn-in: {r.error}")
            continue
        if r.measurement_invalid is not None or r.tflops is None:
            fail("measurement_invalid", f"measurement invalid: {r.measurement_invalid or 'no throughput'}")
        else:
            if r.tflops < thresholds.min_peak_fraction * peak:
                fail("throughput_peak", f"reached {r.tflops:.1f} TFLOPS {evidence.dtype}, below "
                     f"{thresholds.min_peak_fraction:.0%} of the {peak:.1f} TFLOPS per-core peak"
                     + _peak_note(evidence))
            if r.tflops < thresholds.min_median_fraction * median:
                fail("throughput_outlier", f"reached {r.tflops:.1f} TFLOPS, below "
                     f"{thresholds.min_median_fraction:.0%} of the node median {median:.1f} TFLOPS")
        if r.nan_count or r.inf_count:
            fail("nan_inf", f"produced {r.nan_count} NaN and {r.inf_count} Inf values")
        if not r.max_rel_error <= thresholds.max_rel_error:
            fail("numerical_error", f"max relative error {r.max_rel_error:.2e} exceeds the "
                 f"{evidence.dtype} tolerance {thresholds.max_rel_error:.0e}")
        if r.mismatched_iterations:
            fail("repeatability", f"output was not bitwise identical across iterations "
                 f"({r.mismatched_iterations} of {r.iterations} differed from the first)")
    return failures


def _hardware_failures(evidence: Evidence) -> list[Failure]:
    failures = []
    for c in evidence.counters:
        if c.uncorrectable and c.after > 0:
            during = f", {c.delta} during the burn-in" if c.delta else ", none during the burn-in"
            failures.append(Failure("ecc_uncorrectable", f"device {c.device} {c.memory} has {c.after} "
                                    f"uncorrectable ECC events ({c.name}){during}", c.device))
    for e in evidence.hw_errors:
        # nc-id in the log is the core's index on its device, not the node-wide index used above.
        where = "the node" if e.device is None else f"device {e.device}" + (
            "" if e.core is None else f" (nc-id {e.core})")
        failures.append(Failure("hw_error_log", f"kernel log reports NEURON_HW_ERR={e.kind} on {where}",
                                e.device))
    return failures


def evaluate(evidence: Evidence, thresholds: Thresholds) -> tuple[Failure, ...]:
    """All failures; the node passes only if there are none."""
    return tuple(_inventory(evidence) + _core_failures(evidence, thresholds) + _hardware_failures(evidence))
