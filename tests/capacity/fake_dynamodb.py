"""An in-memory DynamoDB for the purchase records, answering real botocore clients on the wire.

It answers at botocore's ``before-send`` event, so botocore serialises, retries (a resent write
included) and parses exactly as it does against AWS. botocore has checked every request against
its dynamodb model before it is sent; every answer is checked against the operation's output
shape here. GetItem, PutItem and UpdateItem are modelled, with the expression forms the records
use (attribute_not_exists, =, AND; SET and REMOVE); anything else fails the test. As DynamoDB
does, unused expression names or values are rejected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from boto3.dynamodb.types import TypeDeserializer
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from capacity_fakes import Body, check_answer

# A fault for one send: the write is applied but its answer is lost (botocore sees a timeout).
LOST = "lost"
_PLAIN = TypeDeserializer().deserialize


class _Refused(Exception):
    """An error answer: its code, HTTP status, message and further fields."""

    def __init__(self, code: str, status: int = 400, message: str = "", **fields: Any) -> None:
        super().__init__(code)
        self.code, self.status, self.message, self.fields = code, status, message or code, fields


@dataclass
class FakeDynamoDB:
    service_model: Any
    key: tuple[str, str]
    tables: dict[str, dict[tuple[str, ...], dict[str, Any]]] = field(default_factory=dict)
    sends: list[str] = field(default_factory=list)
    # Per operation, one fault per send: LOST, or an error code answered instead.
    faults: dict[str, list[str]] = field(default_factory=dict)

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-send.dynamodb", self.send)
        return client

    def create_table(self, name: str) -> None:
        self.tables[name] = {}

    def items(self, table: str) -> list[dict[str, Any]]:
        """The table's items as plain values (numbers as Decimal)."""
        return [
            {name: _PLAIN(value) for name, value in item.items()}
            for item in self.tables[table].values()
        ]

    def fail(self, operation: str, *faults: str) -> None:
        self.faults.setdefault(operation, []).extend(faults)

    def count(self, operation: str) -> int:
        return self.sends.count(operation)

    def send(self, request: Any, **_: Any) -> AWSResponse:
        operation = request.headers["X-Amz-Target"].decode().split(".")[-1]
        params = json.loads(request.body)
        self.sends.append(operation)
        queued = self.faults.get(operation)
        fault = queued.pop(0) if queued else None
        if fault not in (None, LOST):
            return self._error(_Refused(fault, 500 if fault == "InternalServerError" else 400))
        try:
            body = getattr(self, f"_{operation}")(**params)
        except _Refused as refused:
            return self._error(refused)
        check_answer(self.service_model.operation_model(operation), body)
        if fault == LOST:
            raise ReadTimeoutError(endpoint_url=request.url)
        return AWSResponse(request.url, 200, {}, Body(json.dumps(body).encode()))

    # --- operations -------------------------------------------------------------------------

    def _GetItem(self, TableName: str, Key: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        item = self._table(TableName).get(self._key_of(Key))
        return {"Item": item} if item else {}

    def _PutItem(self, TableName: str, Item: dict[str, Any], **options: Any) -> dict[str, Any]:
        table = self._table(TableName)
        key = self._key_of(Item)
        self._check_condition(table.get(key), options)
        table[key] = Item
        return {}

    def _UpdateItem(
        self, TableName: str, Key: Mapping[str, Any], UpdateExpression: str, **options: Any
    ) -> dict[str, Any]:
        table = self._table(TableName)
        key = self._key_of(Key)
        self._check_condition(table.get(key), options, UpdateExpression)
        names = options.get("ExpressionAttributeNames", {})
        values = options.get("ExpressionAttributeValues", {})
        item = dict(table.get(key) or Key)
        sets, _, removes = UpdateExpression.removeprefix("SET ").partition(" REMOVE ")
        for assignment in sets.split(", "):
            name, value = _match(r"(#\w+) = (:\w+)", assignment).groups()
            item[names[name]] = values[value]
        for name in removes.split(", ") if removes else ():
            item.pop(names[name], None)
        table[key] = item
        return {}

    # --- helpers ----------------------------------------------------------------------------

    def _table(self, name: str) -> dict[tuple[str, ...], dict[str, Any]]:
        if name not in self.tables:
            raise _Refused("ResourceNotFoundException")
        return self.tables[name]

    def _key_of(self, item: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(item[name]["S"] for name in self.key)

    def _check_condition(
        self, item: dict[str, Any] | None, options: Mapping[str, Any], update: str = ""
    ) -> None:
        condition = options.get("ConditionExpression", "")
        names = options.get("ExpressionAttributeNames", {})
        values = options.get("ExpressionAttributeValues", {})
        used = f"{condition} {update}"
        unused = [p for p in [*names, *values] if not re.search(rf"{re.escape(p)}\b", used)]
        if unused:
            raise _Refused("ValidationException", message=f"unused in expressions: {unused}")
        clauses = condition.split(" AND ") if condition else []
        if not all(_holds(clause, item or {}, names, values) for clause in clauses):
            old = options.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and item
            raise _Refused("ConditionalCheckFailedException", **({"Item": item} if old else {}))

    def _error(self, refused: _Refused) -> AWSResponse:
        body = {
            "__type": f"com.amazonaws.dynamodb.v20120810#{refused.code}",
            "message": refused.message,
            **refused.fields,
        }
        return AWSResponse("https://dynamodb", refused.status, {}, Body(json.dumps(body).encode()))


def _match(pattern: str, text: str) -> re.Match[str]:
    found = re.fullmatch(pattern, text)
    if found is None:
        raise AssertionError(f"the fake does not model the expression {text!r}")
    return found


def _holds(
    clause: str, item: Mapping[str, Any], names: Mapping[str, str], values: Mapping[str, Any]
) -> bool:
    if clause.startswith("attribute_not_exists("):
        return names[_match(r"attribute_not_exists\((#\w+)\)", clause)[1]] not in item
    name, value = _match(r"(#\w+) = (:\w+)", clause).groups()
    return item.get(names[name]) == values[value]
