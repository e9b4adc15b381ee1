"""Fixtures for the Capacity Block handler tests: builders and fakes are in capacity_fakes.py,
the handler's Lambda environments in lambda_env.py."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import boto3
import botocore.endpoint
import pytest
from botocore.stub import Stubber
from capacity_fakes import NOW, RECORDS_TABLE, Clock, StubbedEC2, Wire, offering
from fake_dynamodb import FakeDynamoDB
from fake_ec2 import FakeEC2
from lambda_env import LambdaEnvironment, load

from trn_constructs.capacity_purchase.handler.capacity_block import aws
from trn_constructs.capacity_purchase.handler.capacity_block.records import (
    LOGICAL_ID_KEY,
    STACK_ID_KEY,
)

REAL_EC2_CLIENT = aws.ec2_client
REAL_RECORDS_CLIENT = aws.records_client


@dataclass
class Outside:
    """What every Lambda environment of a test shares, as real ones share AWS: the EC2 clients
    (real ones, unless a fake is installed), the purchase records and a clock that only sleeping
    moves."""

    clock: Clock
    dynamodb: FakeDynamoDB
    ec2_client: Callable[..., Any] = REAL_EC2_CLIENT
    _records_client: Any = None

    def records_client(self) -> Any:
        """The handler's real DynamoDB client (made once per test: clients are slow to make)."""
        if self._records_client is None:
            self._records_client = self.dynamodb.attach(REAL_RECORDS_CLIENT())
        return self._records_client


def _connect(monkeypatch: pytest.MonkeyPatch, module: Any, outside: Outside) -> None:
    """Point a handler ``aws`` module's seams at ``outside`` (late-bound, so a fixture may install
    its fake after the environment was made)."""
    monkeypatch.setattr(module, "utcnow", outside.clock.now)
    monkeypatch.setattr(module, "sleep", outside.clock.sleep)
    monkeypatch.setattr(
        module, "ec2_client", lambda purpose, region=None: outside.ec2_client(purpose, region)
    )
    monkeypatch.setattr(module, "records_client", outside.records_client)


@pytest.fixture(scope="session")
def fake_session() -> boto3.Session:
    """Explicit fake credentials, so nothing is resolved from the machine; the service models it
    loads are reused by every test."""
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-2"
    )


@pytest.fixture(scope="session")
def dynamodb_model(fake_session: boto3.Session) -> Any:
    return fake_session.client("dynamodb").meta.service_model


@pytest.fixture(autouse=True)
def outside(
    monkeypatch: pytest.MonkeyPatch, fake_session: boto3.Session, dynamodb_model: Any
) -> Outside:
    """The fake session as boto3's default, no ambient AWS settings, and the shared clock; the
    offering search command (imported as trn_constructs) sees the same."""
    # Nothing from the machine's own AWS setup (profiles, container or web-identity credentials,
    # retry settings) may leak in.
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", fake_session)
    dynamodb = FakeDynamoDB(dynamodb_model, key=(STACK_ID_KEY, LOGICAL_ID_KEY))
    dynamodb.create_table(RECORDS_TABLE)
    shared = Outside(clock=Clock(NOW), dynamodb=dynamodb)
    _connect(monkeypatch, aws, shared)
    return shared


@pytest.fixture
def new_environment(
    monkeypatch: pytest.MonkeyPatch, outside: Outside, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., LambdaEnvironment]:
    """Makes fresh Lambda environments of the handler, all sharing ``outside``; by default each
    is the function of the stack the builders describe, with its records table."""

    def make(table: str = RECORDS_TABLE) -> LambdaEnvironment:
        environment = load(tmp_path_factory.mktemp("lambda-tmp"))
        environment.environ[aws.RECORDS_TABLE_VARIABLE] = table
        _connect(monkeypatch, environment.module("aws"), outside)
        return environment

    return make


@pytest.fixture
def handler(new_environment: Callable[..., LambdaEnvironment]) -> LambdaEnvironment:
    """The handler in one fresh Lambda environment."""
    return new_environment()


@pytest.fixture
def records(outside: Outside) -> FakeDynamoDB:
    """The purchase records every environment of the test reads and writes."""
    return outside.dynamodb


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch, outside: Outside):
    """Stubbed clients behind the handler's ``ec2_client``; every queued response must be used."""
    clients = {purpose: REAL_EC2_CLIENT(purpose) for purpose in ("describe", "purchase")}
    fake = StubbedEC2(
        describe=clients["describe"],
        purchase=clients["purchase"],
        describe_stub=Stubber(clients["describe"]),
        purchase_stub=Stubber(clients["purchase"]),
    )
    # Counted before the Stubber answers, so an unexpected extra purchase call is still seen.
    clients["purchase"].meta.events.register(
        "before-parameter-build.ec2.PurchaseCapacityBlock",
        lambda params, **_: fake.purchase_calls.append(params),
    )
    monkeypatch.setattr(outside, "ec2_client", lambda purpose, region=None: clients[purpose])
    with fake.describe_stub, fake.purchase_stub:
        yield fake
        fake.describe_stub.assert_no_pending_responses()
        fake.purchase_stub.assert_no_pending_responses()


@pytest.fixture
def fake_ec2(monkeypatch: pytest.MonkeyPatch, outside: Outside) -> FakeEC2:
    """EC2 as state behind the handler's real clients: two offerings fit the builders'
    properties under their cap, so a second purchase would always find one. No listing lag
    unless the test sets one."""
    fake = FakeEC2(
        clock=outside.clock,
        make_client=REAL_EC2_CLIENT,
        offerings=[offering("cb-0aaa"), offering("cb-0ddd", start="2026-12-03T11:30")],
    )
    monkeypatch.setattr(outside, "ec2_client", fake.client)
    return fake


@pytest.fixture
def instant_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's retry backoff sleeps through time.sleep; tests never sleep for real."""
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda seconds: None)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch, outside: Outside, instant_retries: None):
    """The handler's real clients (real retry configuration), answered by a script."""
    scripted = Wire(REAL_EC2_CLIENT("describe").meta.service_model)

    def factory(purpose: str, region: str | None = None):
        client = REAL_EC2_CLIENT(purpose, region)
        client.meta.events.register("before-send.ec2", scripted.send)
        return client

    monkeypatch.setattr(outside, "ec2_client", factory)
    yield scripted
    assert not any(scripted.script.values()), f"unused answers: {scripted.script}"
