"""trn_burnin.report_check: the standard-library schema checker (held to the real jsonschema package)
and the gate's strict reading of node reports."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import jsonschema
import pytest

from tests.burnin.fakes import FakeHost, healthy_result
from trn_burnin.catalog import CATALOG
from trn_burnin.collective import SCHEMA_PATH as CLUSTER_TEST_SCHEMA_PATH
from trn_burnin.report_check import (
    GATE_FILES, PLAUSIBLE_PEAK_MULTIPLE, SCHEMA_PATH, UnreadableReport, load_schema, read_node_report,
    validate_report,
)
from trn_burnin.runner import RunOptions, run_burnin
from trn_burnin.thresholds import Thresholds

# Every keyword the subset validator understands; a schema using another one needs the validator
# extended first (annotations such as title and description change nothing).
SUPPORTED_KEYWORDS = {"$schema", "$id", "title", "description", "type", "properties", "required",
                      "additionalProperties", "items", "const", "enum", "minimum", "maximum"}


def _report(overrides=None) -> dict:
    host = FakeHost()
    host.overrides.update(overrides or {})
    options = RunOptions(spec=CATALOG["trn2"], instance_id="i-0aaa", ultraserver_id=None, dtype="bf16",
                         shape=(4096, 4096, 4096), repeat=4, warmup_s=30, duration_s=180, sample_tiles=4, seed=1,
                         thresholds=Thresholds.for_dtype("bf16"))
    return run_burnin(options, host, now=lambda: "2026-11-22T08:10:00Z")


REPORT = _report()
FAILED_REPORT = _report({5: healthy_result(5, 0, tflops=20.0)})


def _keywords(schema) -> set[str]:
    if isinstance(schema, list):
        return set().union(*map(_keywords, schema)) if schema else set()
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key == "properties":
            found |= set().union(*map(_keywords, value.values()))
        elif key in ("items", "additionalProperties"):
            found |= _keywords(value)
    return found


@pytest.mark.parametrize("path", [SCHEMA_PATH, CLUSTER_TEST_SCHEMA_PATH], ids=lambda p: p.name)
def test_our_schemas_use_only_what_the_checker_understands(path):
    schema = load_schema(path)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert _keywords(schema) <= SUPPORTED_KEYWORDS


def _mutations(document, path=()):
    """Documents that differ from ``document`` in one place: each value of another type or out of
    range, each field missing, an unknown field in each object."""
    def at(value):
        changed = copy.deepcopy(document)
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return changed

    if path:
        for value in ("text", 7, -1, 1e9, 0.5, True, None, [], {}):
            yield at(value)
    node = document
    for key in path:
        node = node[key]
    if isinstance(node, dict):
        for key in node:
            trimmed = copy.deepcopy(document)
            target = trimmed
            for step in path:
                target = target[step]
            del target[key]
            yield trimmed
            yield from _mutations(document, (*path, key))
        extended = copy.deepcopy(document)
        target = extended
        for step in path:
            target = target[step]
        target["unexpected"] = 1
        yield extended
    elif isinstance(node, list) and node:
        yield from _mutations(document, (*path, 0))


def test_the_checker_agrees_with_jsonschema_on_every_one_place_change_of_a_report():
    report = copy.deepcopy(FAILED_REPORT)
    report["cores"], report["chips"] = report["cores"][4:6], report["chips"][:1]  # keep it quick
    validator = jsonschema.Draft202012Validator(load_schema())
    documents = list(_mutations(report))
    assert len(documents) > 1000
    disagreements = [d for d in documents if (validate_report(d) == []) != validator.is_valid(d)]
    assert disagreements == []
    assert validator.is_valid(REPORT) and validate_report(REPORT) == []


def test_the_schema_bounds_fraction_of_peak_as_the_measurement_does():
    core = load_schema()["properties"]["cores"]["items"]["properties"]["fraction_of_peak"]
    assert core["maximum"] == PLAUSIBLE_PEAK_MULTIPLE
    too_fast = copy.deepcopy(REPORT)
    too_fast["cores"][0]["fraction_of_peak"] = 1.2
    assert validate_report(too_fast) == ["$.cores[0].fraction_of_peak: 1.2 is above 1.05"]


def test_a_conforming_report_is_read_for_the_gate():
    reading = read_node_report(json.dumps(FAILED_REPORT).encode())
    assert not reading.passed and reading.reasons[0].startswith("core 5 (device 0) reached 20.0 TFLOPS")
    assert len(reading.chip_fractions_of_peak) == 16
    assert reading.thresholds == "cores >= 70% of the 78.6 TFLOPS bf16 peak and >= 90% of their node's median"
    assert read_node_report(json.dumps(REPORT).encode()).passed is True


def _changed(change) -> bytes:
    report = copy.deepcopy(REPORT)
    change(report)
    return json.dumps(report).encode()


def _set(path, value):
    def change(report):
        target = report
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


@pytest.mark.parametrize("body, reason", [
    (b"[1, 2]", "a JSON array, not an object"),
    (b"null", "a JSON null, not an object"),
    (b'"passed"', "a JSON string, not an object"),
    (b"true", "a JSON boolean, not an object"),
    (b"{not json", "not JSON: Expecting property name"),
    (b"\xff\xfe", "not JSON: "),
    (b"[" * 100000 + b"]" * 100000, "not JSON: maximum recursion depth"),
    (_changed(_set(("chips", 0, "tflops"), float("nan"))), "not JSON: NaN is not a number a report may hold"),
    (_changed(_set(("verdict", "passed"), "false")),
     "does not match report_schema.json: $.verdict.passed: expected boolean, got str"),
    (_changed(_set(("schema_version",), 1)), "schema_version 1, this gate reads 2: run the burn-in"),
    (_changed(lambda r: r.pop("cores")), "does not match report_schema.json: $: missing 'cores'"),
    (_changed(_set(("verdict", "failures"), [{"rule": "throughput_peak", "message": "slow", "device": 0,
                                              "core": 3}])),
     "contradicts itself: verdict.passed is true with 1 failures"),
    (_changed(lambda r: r.update(cores=r["cores"][:5])), "contradicts itself: it passes with 5 of 128 cores proven"),
    (_changed(_set(("chips", 2, "tflops"), 5000.0)),
     "contradicts itself: device 2 reports 5000.0 TFLOPS, above 1.05 x its 629.1 TFLOPS peak"),
    (_changed(lambda r: r["cores"][9].update(tflops=None, fraction_of_peak=None)),
     "contradicts itself: core 9 passed without a valid measurement"),
], ids=["array", "null", "string", "true", "bad json", "not utf-8", "deep", "nan", "passed as a string", "old schema",
        "missing cores", "passed with failures", "too few cores", "chip above peak", "unmeasured core"])
def test_anything_else_is_unreadable_with_the_reason(body, reason):
    with pytest.raises(UnreadableReport) as raised:
        read_node_report(body)
    assert str(raised.value).startswith(reason)


def test_the_gate_needs_only_the_standard_library_from_this_package():
    assert GATE_FILES == ("__init__.py", "report_check.py", "report_schema.json")
    source = (SCHEMA_PATH.parent / "report_check.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines()
               if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "json", "dataclasses", "pathlib", "typing"}


def test_invalid_measurements_conform_to_the_schema():
    invalid = replace(healthy_result(3, 0), tflops=None, latency_p50_ms=None, latency_p99_ms=None,
                      measurement_invalid="20 of 20 device-timed GEMM latencies were not positive")
    report = _report({3: invalid})
    assert validate_report(report) == []
    reading = read_node_report(json.dumps(report).encode())
    assert not reading.passed and "measurement invalid: 20 of 20" in reading.reasons[0]
