"""EMULATION of the Step Functions semantics the handover's state machine uses, to run its
synthesized definition against the handler code: Task (a Lambda called with its Parameters, Retry
and Catch), Choice on a boolean, Wait on SecondsPath, Succeed and Fail, JSONPath of the forms
$, $.key[.key] and $$.Execution.Id, ResultPath $ / $.key / null. Anything else is refused, so the
definition cannot drift beyond what is emulated."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Callable


class ExecutionFailed(Exception):
    def __init__(self, error: str, cause: str):
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


def _get(path: str, data: Any, context: dict[str, Any]) -> Any:
    if path == "$$.Execution.Id":
        return context["Execution"]["Id"]
    if path == "$":
        return data
    assert path.startswith("$."), path
    for key in path[2:].split("."):
        data = data[key]
    return data


def _parameters(template: Any, data: Any, context: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = copy.deepcopy(_get(value, data, context))
            else:
                out[key] = _parameters(value, data, context)
        return out
    return template


def _put(result_path: str | None, data: Any, result: Any) -> Any:
    if result_path is None:
        return data
    if result_path == "$":
        return result
    assert result_path.startswith("$.") and "." not in result_path[2:], result_path
    return {**data, result_path[2:]: result}


@dataclass
class Emulator:
    definition: dict[str, Any]
    functions: dict[str, Callable[[dict[str, Any]], Any]]  # Resource ARN -> handler
    sleep: Callable[[float], None]  # moves the test's clock

    def run(self, execution_arn: str, data: Any, max_transitions: int = 100_000) -> Any:
        context = {"Execution": {"Id": execution_arn}}
        name = self.definition["StartAt"]
        for _ in range(max_transitions):
            state = self.definition["States"][name]
            kind = state["Type"]
            if kind == "Task":
                data, name = self._task(state, data, context)
            elif kind == "Choice":
                name = next((c["Next"] for c in state["Choices"] if _get(c["Variable"], data, context) is c["BooleanEquals"]),
                            state["Default"])
            elif kind == "Wait":
                self.sleep(_get(state["SecondsPath"], data, context))
                name = state["Next"]
            elif kind == "Succeed":
                return _get(state.get("OutputPath", "$"), data, context)
            elif kind == "Fail":
                raise ExecutionFailed(_get(state["ErrorPath"], data, context), _get(state["CausePath"], data, context))
            else:
                raise AssertionError(f"state type {kind} is not emulated")
        raise AssertionError("too many transitions")

    def _task(self, state: dict[str, Any], data: Any, context: dict[str, Any]) -> tuple[Any, str]:
        payload = _parameters(state["Parameters"], data, context)
        attempts: dict[int, int] = {}
        while True:
            try:
                result = self.functions[state["Resource"]](json.loads(json.dumps(payload)))
                return _put(state.get("ResultPath", "$"), data, result), state["Next"]
            except Exception as error:  # noqa: BLE001 - a Lambda error, as Step Functions sees it
                name = type(error).__name__
                for index, retry in enumerate(state.get("Retry", [])):
                    if "States.ALL" in retry["ErrorEquals"] or name in retry["ErrorEquals"]:
                        if attempts.get(index, 0) < retry["MaxAttempts"]:
                            self.sleep(retry["IntervalSeconds"] * retry["BackoffRate"] ** attempts.get(index, 0))
                            attempts[index] = attempts.get(index, 0) + 1
                            break
                        index = -1
                        break
                else:
                    index = -1
                if index >= 0:
                    continue
                for catch in state.get("Catch", []):
                    if "States.ALL" in catch["ErrorEquals"] or name in catch["ErrorEquals"]:
                        failure = {"Error": name, "Cause": str(error)}
                        return _put(catch.get("ResultPath", "$"), data, failure), catch["Next"]
                raise
