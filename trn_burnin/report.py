"""The per-node report: a versioned JSON document, described by report_schema.json beside this file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from trn_burnin.verdict import Evidence, Failure, Thresholds

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report_schema.json")


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    return json.loads(path.read_text())


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
            "tflops": sum(r.tflops for r in results if r.error is None),
            "ecc": [{"counter": c.name, "memory": c.memory, "uncorrectable": c.uncorrectable,
                     "before": c.before, "after": c.after}
                    for c in evidence.counters if c.device == device.index],
            "passed": device.index not in failing_devices and passed == len(results),
        })
    return chips


def build_report(
    *,
    node: NodeIdentity,
    software: Mapping[str, str | None],
    workload: Mapping[str, Any],
    thresholds: Thresholds,
    evidence: Evidence,
    failures: tuple[Failure, ...],
    generated_at: str,
) -> dict[str, Any]:
    peak = evidence.spec.core.peak_tflops_per_core(evidence.dtype)
    failing_cores = {f.core for f in failures if f.core is not None}
    cores = [{**r.to_dict(), "fraction_of_peak": r.tflops / peak,
              "passed": r.error is None and r.core not in failing_cores} for r in evidence.results]
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": generated_at,
        "node": dict(node.__dict__),
        "software": dict(software),
        "workload": dict(workload),
        "thresholds": {**thresholds.to_dict(), "peak_tflops_per_core": peak},
        "expected": {"devices": evidence.spec.chips_per_instance,
                     "cores_per_device": evidence.spec.neuron_cores_per_chip,
                     "found_devices": len(evidence.topology.devices)},
        "cores": cores,
        "chips": _chips(evidence, failures),
        "hardware_errors": [e.line for e in evidence.hw_errors],
        "verdict": {"passed": not failures, "failures": [f.to_dict() for f in failures]},
    }


# -- validation: the subset of JSON Schema that report_schema.json uses -----------------------
_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[name])


def _errors(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    if "const" in schema and value != schema["const"]:
        return [f"{path}: expected {schema['const']!r}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_is_type(value, n) for n in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    if "minimum" in schema and _is_type(value, "number") and value < schema["minimum"]:
        return [f"{path}: {value} is below {schema['minimum']}"]
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        found += [f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                found += _errors(item, properties[key], f"{path}.{key}")
            elif extra is False:
                found.append(f"{path}: unexpected field {key!r}")
            elif isinstance(extra, dict):
                found += _errors(item, extra, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += _errors(item, schema["items"], f"{path}[{index}]")
    return found


def validate_report(document: Any, schema: Mapping[str, Any] | None = None) -> list[str]:
    """Schema violations of ``document``, as readable paths; empty when it conforms."""
    return _errors(document, schema or load_schema(), "$")
