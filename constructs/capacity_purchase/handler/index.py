"""Lambda entry points of the Capacity Block purchase custom resource (CDK Provider framework):
``index.on_event`` and ``index.is_complete``. The contract is capacity_block/__init__.py.

The Lambda runtime imports this file as the top-level module ``index`` with this directory on
sys.path, so the package beside it is the top-level ``capacity_block``; its modules import each
other relatively, which also serves the kit importing them as
trn_constructs.capacity_purchase.handler.capacity_block.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from capacity_block import lifecycle

LOG = logging.getLogger("capacity_block")


def on_event(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    request_type = event["RequestType"]
    LOG.info(
        "%s %s (physical id %s)",
        request_type,
        event.get("LogicalResourceId"),
        event.get("PhysicalResourceId"),
    )
    if request_type == "Delete":
        return lifecycle.delete(event)
    if request_type == "Update":
        return lifecycle.update(event)
    return lifecycle.create(event)


def is_complete(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    return lifecycle.is_complete(event)
