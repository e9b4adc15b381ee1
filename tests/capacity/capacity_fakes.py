"""Builders and fakes for the Capacity Block handler tests (fixtures live in conftest.py).

Nothing here talks to AWS. Two levels of scripted fake are used:
* ``StubbedEC2``: botocore Stubbers on a "describe" and a "purchase" client, handed to the handler
  through its ``ec2_client`` seam; they assert the exact calls and parameters.
* ``Wire``: the handler's real clients with every HTTP send answered by a script (botocore's
  ``before-send`` event). Only this level exercises botocore's own retry configuration.
Fakes that keep state, for scenarios across Lambda environments: fake_ec2.py (EC2 with its
listing lag) and fake_dynamodb.py (the purchase records, which every test's handler uses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from trn_constructs.capacity_purchase.handler.capacity_block.purchase import PURCHASE_ATTEMPTS

UTC = timezone.utc
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
STACK_NAME = "TrnCluster"
STACK_ID = "arn:aws:cloudformation:us-east-2:123456789012:stack/TrnCluster/11111111-aaaa"
LOGICAL_ID = "CapacityPurchase1A2B3C4D"
RECORDS_TABLE = "TrnCluster-CapacityPurchaseRecords0B56D99C-1ABCDEF"
ADOPTION_FILTERS = [
    {"Name": "tag:trn-kit:stack-name", "Values": [STACK_NAME]},
    {"Name": "tag:trn-kit:logical-id", "Values": [LOGICAL_ID]},
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def properties(**overrides: Any) -> dict[str, Any]:
    """ResourceProperties as CloudFormation delivers them (all strings)."""
    props = {
        "ServiceToken": "arn:aws:lambda:us-east-2:123456789012:function:provider",
        "InstanceType": "trn2.48xlarge",
        "InstanceCount": "4",
        "CapacityDurationHours": "168",
        "EarliestStart": "2026-12-01T00:00:00Z",
        "LatestStart": "2026-12-10T00:00:00Z",
        "AvailabilityZone": "",
        "MaxUpfrontFeeUsd": "50000",
        "ConfirmPurchase": "false",
        "InstancePlatform": "Linux/UNIX",
        "Tags": [{"Key": "team", "Value": "ml"}],
        "StackName": STACK_NAME,
    }
    props.update(overrides)
    return {key: value for key, value in props.items() if value is not None}


def event(request_type: str, props: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base = {
        "RequestType": request_type,
        "RequestId": "req-1",
        "StackId": STACK_ID,
        "LogicalResourceId": LOGICAL_ID,
        "ResourceType": "Custom::CapacityBlockPurchase",
        "ResourceProperties": props,
    }
    return base | fields


def offering(
    offering_id: str = "cb-0aaa",
    start: str = "2026-12-02T11:30",
    fee: str = "20000.00",
    hours: int = 168,
    **fields: Any,
) -> dict[str, Any]:
    begin = at(start)
    item = {
        "CapacityBlockOfferingId": offering_id,
        "InstanceType": "trn2.48xlarge",
        "AvailabilityZone": "us-east-2b",
        "InstanceCount": 4,
        "StartDate": begin,
        "EndDate": begin + timedelta(hours=hours),
        "CapacityBlockDurationHours": hours,
        "UpfrontFee": fee,
        "CurrencyCode": "USD",
        "Tenancy": "default",
    }
    return item | fields


def kit_tags(
    stack_id: str = STACK_ID, offering_id: str = "cb-0aaa", fee: str = "20000.00"
) -> list[dict[str, str]]:
    return [
        {"Key": "trn-kit:stack-name", "Value": STACK_NAME},
        {"Key": "trn-kit:stack-id", "Value": stack_id},
        {"Key": "trn-kit:logical-id", "Value": LOGICAL_ID},
        {"Key": "trn-kit:offering-id", "Value": offering_id},
        {"Key": "trn-kit:upfront-fee-usd", "Value": fee},
    ]


def reservation(
    reservation_id: str = "cr-0bbb",
    state: str = "scheduled",
    tags: list[dict[str, str]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A capacity reservation as the offering() default would become once bought."""
    begin = at("2026-12-02T11:30")
    item = {
        "CapacityReservationId": reservation_id,
        "InstanceType": "trn2.48xlarge",
        "InstancePlatform": "Linux/UNIX",
        "AvailabilityZone": "us-east-2b",
        "TotalInstanceCount": 4,
        "State": state,
        "StartDate": begin,
        "EndDate": begin + timedelta(hours=168),
        "ReservationType": "capacity-block",
        "Tags": kit_tags() + [{"Key": "team", "Value": "ml"}] if tags is None else tags,
    }
    return item | fields


def offerings_params(**overrides: Any) -> dict[str, Any]:
    """The DescribeCapacityBlockOfferings parameters ``properties()`` leads to."""
    params = {
        "CapacityDurationHours": 168,
        "StartDateRange": at("2026-12-01T00:00"),
        "EndDateRange": at("2026-12-17T00:00"),
        "InstanceType": "trn2.48xlarge",
        "InstanceCount": 4,
    }
    params.update(overrides)
    return {key: value for key, value in params.items() if value is not None}


class Clock:
    """A clock that stands still until something sleeps; it records every sleep."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._now += timedelta(seconds=seconds)


@dataclass
class StubbedEC2:
    describe: Any
    purchase: Any
    describe_stub: Stubber
    purchase_stub: Stubber
    purchase_calls: list[dict[str, Any]] = field(default_factory=list)

    def adoption_check(self, *reservations: dict[str, Any]) -> None:
        self.describe_stub.add_response(
            "describe_capacity_reservations",
            {"CapacityReservations": list(reservations)},
            {"Filters": ADOPTION_FILTERS},
        )

    def offerings(self, *items: dict[str, Any], params: dict[str, Any] | None = None) -> None:
        self.describe_stub.add_response(
            "describe_capacity_block_offerings",
            {"CapacityBlockOfferings": list(items)},
            params or offerings_params(),
        )

    def reservation(self, item: dict[str, Any]) -> None:
        self.describe_stub.add_response(
            "describe_capacity_reservations",
            {"CapacityReservations": [item]},
            {"CapacityReservationIds": [item["CapacityReservationId"]]},
        )

    def purchase_succeeds(self, item: dict[str, Any]) -> None:
        self.purchase_stub.add_response("purchase_capacity_block", {"CapacityReservation": item})

    def purchase_throttled_throughout(self) -> None:
        """Every purchase attempt throttled, with the adoption re-check between attempts."""
        for attempt in range(PURCHASE_ATTEMPTS):
            if attempt:
                self.adoption_check()
            self.purchase_fails("RequestLimitExceeded", 503)

    def purchase_fails(self, code: str, status: int) -> None:
        self.purchase_stub.add_client_error(
            "purchase_capacity_block",
            service_error_code=code,
            service_message=code,
            http_status_code=status,
        )


# --- wire level ---------------------------------------------------------------------------------


EC2_URL = "https://ec2.us-east-2.amazonaws.com/"
EC2_XMLNS = ' xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'


class Body:
    """An HTTP body as botocore reads a response's."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any):
        yield self._data


def check_answer(operation_model: Any, body: dict[str, Any]) -> None:
    """Fail the test if a fake's answer does not fit the operation's output shape."""
    report = ParamValidator().validate(body, operation_model.output_shape)
    if report.has_errors():
        raise AssertionError(f"{operation_model.name} answer: {report.generate_report()}")


def _xml(shape: Any, value: Any) -> str:
    """Serialise ``value`` the way EC2's query protocol answers (enough for these tests)."""
    if shape.type_name == "structure":
        return "".join(
            f"<{member.serialization.get('name', key)}>{_xml(member, value[key])}"
            f"</{member.serialization.get('name', key)}>"
            for key, member in shape.members.items()
            if key in value
        )
    if shape.type_name == "list":
        tag = shape.member.serialization.get("name", "item")
        return "".join(f"<{tag}>{_xml(shape.member, item)}</{tag}>" for item in value)
    if shape.type_name == "timestamp":
        return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return escape(str(value))


@dataclass
class Wire:
    """Scripted HTTP answers per operation; records every send."""

    service_model: Any
    script: dict[str, list[Any]] = field(default_factory=dict)
    sends: list[str] = field(default_factory=list)

    def answer(self, operation: str, *answers: Any) -> None:
        self.script.setdefault(operation, []).extend(answers)

    def ok(self, operation: str, body: dict[str, Any]) -> AWSResponse:
        shape = self.service_model.operation_model(operation).output_shape
        xml = f"<{operation}Response{EC2_XMLNS}>{_xml(shape, body)}</{operation}Response>"
        return AWSResponse(EC2_URL, 200, {}, Body(xml.encode()))

    @staticmethod
    def error(code: str, status: int) -> AWSResponse:
        error = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>"
        xml = f"<Response><Errors>{error}</Errors><RequestID>r</RequestID></Response>"
        return AWSResponse(EC2_URL, status, {}, Body(xml.encode()))

    def send(self, request: Any, **_: Any) -> AWSResponse:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        operation = parse_qs(body)["Action"][0]
        self.sends.append(operation)
        answer = self.script[operation].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def count(self, operation: str) -> int:
        return self.sends.count(operation)
