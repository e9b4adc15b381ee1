"""Fixtures for the Capacity Block handler tests; builders and fakes are in capacity_fakes.py."""

from __future__ import annotations

import os

import boto3
import botocore.endpoint
import pytest
from botocore.stub import Stubber
from capacity_fakes import NOW, StubbedEC2, Wire

from trn_constructs.capacity_purchase.handler import index


@pytest.fixture(scope="session")
def fake_session() -> boto3.Session:
    """Explicit fake credentials, so nothing is resolved from the machine; the service models it
    loads are reused by every test."""
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-2"
    )


@pytest.fixture(autouse=True)
def fake_aws(
    monkeypatch: pytest.MonkeyPatch, fake_session: boto3.Session, tmp_path
) -> list[float]:
    """The fake session as boto3's default, no ambient AWS settings, a fixed clock, a recorded
    (never real) sleep, and a fresh /tmp for remembered purchases."""
    # Nothing from the machine's own AWS setup (profiles, container or web-identity credentials,
    # retry settings) may leak in.
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", fake_session)
    monkeypatch.setattr(index, "utcnow", lambda: NOW)
    monkeypatch.setattr(index, "MARKER_DIR", tmp_path)
    slept: list[float] = []
    monkeypatch.setattr(index, "sleep", slept.append)
    return slept


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch):
    """Stubbed clients behind ``index.ec2_client``; every queued response must be consumed."""
    real = index.ec2_client
    clients = {purpose: real(purpose) for purpose in ("describe", "purchase")}
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
    monkeypatch.setattr(index, "ec2_client", lambda purpose, region=None: clients[purpose])
    with fake.describe_stub, fake.purchase_stub:
        yield fake
        fake.describe_stub.assert_no_pending_responses()
        fake.purchase_stub.assert_no_pending_responses()


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch):
    """The handler's real clients (real retry configuration), answered by a script."""
    real = index.ec2_client
    scripted = Wire(real("describe").meta.service_model)

    def factory(purpose: str, region: str | None = None):
        client = real(purpose, region)
        client.meta.events.register("before-send.ec2", scripted.send)
        return client

    # botocore's retry backoff sleeps through time.sleep; tests never sleep for real.
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(index, "ec2_client", factory)
    yield scripted
    assert not any(scripted.script.values()), f"unused answers: {scripted.script}"
