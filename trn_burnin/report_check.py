"""Strict reading of node reports, in the Python standard library alone.

Two readers: ``validate_report`` checks any document against a JSON Schema of the subset our schemas
use (report_schema.json, cluster_test_schema.json); ``read_node_report`` is how the handover gate
reads a node's report: JSON, then the schema, then what the schema cannot say (a verdict that agrees
with its failures, a pass that covers every core, throughputs a core can reach). Anything else is
UnreadableReport, which the gate counts as that node's failure, never as a pass.

The gate's Lambda function has only the standard library and boto3, so this module imports nothing
else and ships with it: GATE_FILES are the files of this package the function needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

SCHEMA_PATH = Path(__file__).with_name("report_schema.json")
SCHEMA_VERSION = 2
GATE_FILES = ("__init__.py", "report_check.py", "report_schema.json")
# No core runs faster than its documented peak; 5% covers clock and rounding in the catalog figure.
# report_schema.json bounds every core's fraction_of_peak by the same number.
PLAUSIBLE_PEAK_MULTIPLE = 1.05
MAX_LISTED_PROBLEMS = 3


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    return json.loads(path.read_text())


# -- validation: the subset of JSON Schema (2020-12) that our schemas use --------------------
_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    if name == "integer" and isinstance(value, float):  # JSON Schema: 1.0 is an integer
        return value.is_integer()
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
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return [f"{path}: {value} is below {schema['minimum']}"]
        if "maximum" in schema and value > schema["maximum"]:
            return [f"{path}: {value} is above {schema['maximum']}"]
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


# -- the gate's reading of one node report ----------------------------------------------------
class UnreadableReport(ValueError):
    """Not a report the gate can judge; the message says why."""


@dataclass(frozen=True)
class NodeReading:
    """What the gate takes from a node report that passed every check."""

    passed: bool
    reasons: tuple[str, ...]  # the verdict's failure messages
    chip_fractions_of_peak: tuple[float, ...]
    thresholds: str  # the rules the node was judged by, in words


def _listed(problems: list[str]) -> str:
    more = len(problems) - MAX_LISTED_PROBLEMS
    return "; ".join(problems[:MAX_LISTED_PROBLEMS]) + (f" (and {more} more)" if more > 0 else "")


def _inconsistencies(report: Mapping[str, Any]) -> list[str]:
    """What a conforming report may still get wrong about itself."""
    verdict, cores, expected = report["verdict"], report["cores"], report["expected"]
    problems = []
    if verdict["passed"] == bool(verdict["failures"]):
        problems.append(f"verdict.passed is {str(verdict['passed']).lower()} with "
                        f"{len(verdict['failures'])} failures")
    if verdict["passed"]:
        wanted = expected["devices"] * expected["cores_per_device"]
        unproven = [c["core"] for c in cores if not c["passed"]]
        if len(cores) != wanted or unproven:
            problems.append(f"it passes with {len(cores) - len(unproven)} of {wanted} cores proven")
    for core in cores:
        if core["passed"] and (core["tflops"] is None or core["fraction_of_peak"] is None
                               or core["error"] is not None or core["measurement_invalid"] is not None):
            problems.append(f"core {core['core']} passed without a valid measurement")
    peak_per_chip = report["thresholds"]["peak_tflops_per_core"] * expected["cores_per_device"]
    for chip in report["chips"]:
        if chip["tflops"] > PLAUSIBLE_PEAK_MULTIPLE * peak_per_chip:
            problems.append(f"device {chip['device']} reports {chip['tflops']:.1f} TFLOPS, above "
                            f"{PLAUSIBLE_PEAK_MULTIPLE:g} x its {peak_per_chip:.1f} TFLOPS peak")
    return problems


def _no_nan(constant: str) -> float:
    """Python's json reads NaN and Infinity, which JSON lacks. A report may hold an infinite error
    (a NaN output is an unbounded error), never a NaN, which no bound can hold."""
    if constant == "NaN":
        raise ValueError("NaN is not a number a report may hold")
    return float(constant)


def read_node_report(body: bytes) -> NodeReading:
    """The gate's reading of a node report's bytes; UnreadableReport unless every check holds."""
    try:
        report = json.loads(body, parse_constant=_no_nan)
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or absurdly nested
        raise UnreadableReport(f"not JSON: {error}") from None
    if not isinstance(report, dict):
        kind = next(name for name in ("array", "string", "boolean", "null", "number") if _is_type(report, name))
        raise UnreadableReport(f"a JSON {kind}, not an object")
    if report.get("schema_version") != SCHEMA_VERSION:
        raise UnreadableReport(f"schema_version {report.get('schema_version')!r}, this gate reads "
                               f"{SCHEMA_VERSION}: run the burn-in of this kit on the node again")
    problems = validate_report(report)
    if problems:
        raise UnreadableReport(f"does not match report_schema.json: {_listed(problems)}")
    problems = _inconsistencies(report)
    if problems:
        raise UnreadableReport(f"contradicts itself: {_listed(problems)}")
    thresholds, dtype = report["thresholds"], report["workload"]["dtype"]
    peak_per_chip = thresholds["peak_tflops_per_core"] * report["expected"]["cores_per_device"]
    return NodeReading(
        passed=report["verdict"]["passed"],
        reasons=tuple(failure["message"] for failure in report["verdict"]["failures"]),
        chip_fractions_of_peak=tuple(chip["tflops"] / peak_per_chip for chip in report["chips"]) if peak_per_chip
        else (),
        thresholds=(f"cores >= {thresholds['min_peak_fraction']:.0%} of the "
                    f"{thresholds['peak_tflops_per_core']:.1f} TFLOPS {dtype} peak and >= "
                    f"{thresholds['min_median_fraction']:.0%} of their node's median"),
    )
