"""Finds the newest image Amazon owns under a name pattern, e.g. ParallelCluster's official AMI.

A CDK Provider framework ``on_event`` handler. Resource property ``NamePattern`` (an EC2 name
filter, ``*`` allowed); returns the image as ``Data.ImageId`` and ``Data.ImageName`` and as the
physical id, so a different image replaces the resource. It picks the way ParallelCluster's own
``get_official_image_id`` does: available images, deprecated ones only when nothing else matches,
the newest creation date first (then the image id, so equal dates still give one answer).

It only reads (ec2:DescribeImages); deleting the resource does nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import boto3

OWNER = "amazon"


def client(service: str) -> Any:
    """The one place clients are made; tests replace it to hand in stubbed clients."""
    return boto3.client(service)


def now() -> datetime:
    return datetime.now(timezone.utc)


def on_event(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": event["PhysicalResourceId"]}
    pattern = event["ResourceProperties"]["NamePattern"]
    image = newest_image(pattern)
    print(f"{pattern}: {image['ImageId']} {image['Name']} created {image['CreationDate']}")
    return {
        "PhysicalResourceId": image["ImageId"],
        "Data": {"ImageId": image["ImageId"], "ImageName": image["Name"]},
    }


def newest_image(pattern: str) -> dict[str, Any]:
    pages = client("ec2").get_paginator("describe_images").paginate(
        Owners=[OWNER],
        Filters=[
            {"Name": "name", "Values": [pattern]},
            {"Name": "state", "Values": ["available"]},
        ],
        # An old ParallelCluster version's images get deprecated; they are still its images.
        IncludeDeprecated=True,
    )
    images = [image for page in pages for image in page["Images"]]
    if not images:
        raise RuntimeError(f"no available image owned by {OWNER} is named like {pattern!r} here")
    at = now()
    return max(
        images,
        key=lambda image: (not _deprecated(image, at), image["CreationDate"], image["ImageId"]),
    )


def _deprecated(image: dict[str, Any], at: datetime) -> bool:
    deprecation = image.get("DeprecationTime")
    return deprecation is not None and datetime.fromisoformat(deprecation) <= at
