"""The handover Lambda's one seam to AWS and to the clock: tests replace these two functions."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.config import Config

# Standard retries absorb throttling; every call the handover makes is safe to repeat (reads,
# conditional writes, terminations of a named instance, a Slurm job submitted behind a marker).
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


def client(service: str) -> Any:
    return boto3.client(service, config=_CONFIG)


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """UTC to the second, as the verdict, the SSM parameter and the pods' --not-after read it."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
