"""The subset of JSON Schema that the report and cluster-test schemas use, in the standard library
only: nodes and the handover's Lambda run it where the jsonschema package is not installed (the
tests check it against jsonschema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

HERE = Path(__file__).resolve().parent
REPORT_SCHEMA = HERE / "report_schema.json"
CLUSTER_TEST_SCHEMA = HERE / "cluster_test_schema.json"

_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}  # fmt: skip


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


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
    if "maximum" in schema and _is_type(value, "number") and value > schema["maximum"]:
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


def problems(document: Any, schema: Mapping[str, Any]) -> list[str]:
    """Schema violations of ``document``, as readable paths; empty when it conforms."""
    return _errors(document, schema, "$")
