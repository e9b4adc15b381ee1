"""The handler's outside world, which the tests replace: AWS clients, the clock and sleeping."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

import boto3
from botocore.config import Config

# Where the construct tells the function the name of its purchase records table.
RECORDS_TABLE_VARIABLE = "PURCHASE_RECORDS_TABLE"
RETRIED = Config(retries={"mode": "standard", "total_max_attempts": 5})


def ec2_client(purpose: str, region: str | None = None):
    """An EC2 client for ``purpose``: "purchase" (never retried by botocore) or "describe"."""
    if purpose == "purchase":
        # botocore would retry a 5xx or a timeout, and a retried purchase buys a second block.
        # total_max_attempts counts the first send; botocore's "max_attempts" counts retries
        # only, so max_attempts=1 would still send twice. Explicit Config beats AWS_MAX_ATTEMPTS.
        config = Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=60)
    else:
        config = RETRIED
    return boto3.client("ec2", region_name=region, config=config)


def records_client():
    """DynamoDB, for the purchase records. botocore may resend a write: every write is
    conditional, and records.py recognises a write of its own that landed before the resend."""
    return boto3.client("dynamodb", config=RETRIED)


def records_table() -> str:
    return os.environ[RECORDS_TABLE_VARIABLE]


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
