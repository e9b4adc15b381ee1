"""Real boto3 clients answered by Python objects, with botocore's own service models checking every
request (the client validates it before sending) and every response (checked here against the
operation's output shape), so a fake cannot accept or return what AWS would not."""

from __future__ import annotations

from typing import Any, Callable

import boto3
from botocore import xform_name
from botocore.awsrequest import AWSResponse
from botocore.validate import validate_parameters

REGION = "us-east-2"
_SESSION = boto3.session.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
)


class AwsError(Exception):
    """Raised by a fake operation: the client raises ClientError with this code, as AWS would."""

    def __init__(self, code: str, message: str = "", status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


class ModelCheckedClient:
    """``client`` is a real boto3 client whose operations call ``service.<operation_name>(**params)``."""

    def __init__(self, service_name: str, service: object):
        self.service = service
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.client = _SESSION.client(service_name)
        events = self.client.meta.events
        service_id = self.client.meta.service_model.service_id.hyphenize()
        events.register(f"before-parameter-build.{service_id}", self._remember)
        events.register(f"before-call.{service_id}", self._answer)

    @staticmethod
    def _remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["fake_params"] = dict(params)

    def _answer(self, model: Any, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        params = context["fake_params"]
        self.calls.append((model.name, params))
        operation: Callable[..., dict[str, Any]] | None = getattr(self.service, xform_name(model.name), None)
        if operation is None:
            raise AssertionError(f"the fake {type(self.service).__name__} has no {model.name}")
        try:
            response = operation(**params) or {}
        except AwsError as error:
            metadata = {"HTTPStatusCode": error.status, "RequestId": "fake"}
            parsed = {"Error": {"Code": error.code, "Message": error.message}, "ResponseMetadata": metadata}
            return AWSResponse("https://fake", error.status, {}, None), parsed
        if model.output_shape is not None:
            validate_parameters(response, model.output_shape)
        return AWSResponse("https://fake", 200, {}, None), {
            **response, "ResponseMetadata": {"HTTPStatusCode": 200, "RequestId": "fake"}
        }

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)
