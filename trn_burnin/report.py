"""The per-node report: a versioned JSON document, described by report_schema.json beside this file
(checked by trn_burnin.report_check)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from trn_burnin.report_check import PLAUSIBLE_PEAK_MULTIPLE, SCHEMA_VERSION
from trn_burnin.thresholds import Thresholds
from trn_burnin.verdict import Evidence, Failure


@dataclass(frozen=True)
class NodeIdentity:
    instance_id: str
    instance_type: str
    catalog_key: str
    ultraserver_id: str | None
    hostname: str


def _chips(evidence: Evidence, failures: tuple[Failure, ...]) -> list[dict[str, Any]]:
    failing_devices = {f.device for f in failures if f.device is not None}
    failing_cores = {f.core for f in failures if f.core is not None}
    chips = []
    for device in evidence.topology.devices:
        results = [r for r in evidence.results if r.device == device.index]
        passed = sum(1 for r in results if r.core not in failing_cores and r.error is None)
        chips.append({
            "device": device.index,
            "cores": len(results),
            "cores_passed": passed,
            "tflops": sum(r.tflops for r in results if r.tflops is not None),
            "ecc": [{"counter": c.name, "memory": c.memory, "uncorrectable": c.uncorrectable,
                     "before": c.before, "after": c.after}
                    for c in evidence.counters if c.device == device.index],
            "passed": device.index not in failing_devices and bool(results) and passed == len(results),
        })
    return chips


def build_report(
    *,
    node: NodeIdentity,
    software: Mapping[str, str | None],
    workload: Mapping[str, Any],
    kernel: Mapping[str, Any],
    thresholds: Thresholds,
    evidence: Evidence,
    failures: tuple[Failure, ...],
    generated_at: str,
) -> dict[str, Any]:
    peak = evidence.spec.core.peak(evidence.dtype)
    failing_cores = {f.core for f in failures if f.core is not None}
    cores = [{**r.to_dict(), "fraction_of_peak": None if r.tflops is None else r.tflops / peak.tflops,
              "passed": r.error is None and r.tflops is not None and r.core not in failing_cores}
             for r in evidence.results]
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": generated_at,
        "node": dict(node.__dict__),
        "software": dict(software),
        "workload": dict(workload),
        "kernel": dict(kernel),
        "thresholds": {**thresholds.to_dict(), "peak_tflops_per_core": peak.tflops, "peak_source": peak.source,
                       "peak_uncertain": peak.uncertain, "max_plausible_fraction_of_peak": PLAUSIBLE_PEAK_MULTIPLE},
        "expected": {"devices": evidence.spec.chips_per_instance,
                     "cores_per_device": evidence.spec.neuron_cores_per_chip,
                     "found_devices": len(evidence.topology.devices)},
        "cores": cores,
        "chips": _chips(evidence, failures),
        "hardware_errors": [e.line for e in evidence.hw_errors],
        "verdict": {"passed": not failures, "failures": [f.to_dict() for f in failures]},
    }
