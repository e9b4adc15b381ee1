"""Entry points of the handover's functions (one code asset, one handler each)."""

from __future__ import annotations

from typing import Any

from . import gate, publish, workflow
from .nodes import node_operations
from .settings import Settings


def on_event(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    return gate.on_event(event)


def is_complete(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    return gate.is_complete(event)


def advance(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    return workflow.advance(event)


def stop_new_work(event: dict[str, Any], _context: Any = None) -> dict[str, str]:
    """EC2's expiration warning, 40 minutes before the block ends: let running jobs finish and start
    no new ones, which EC2 would stop from 30 minutes before the end."""
    settings = Settings.load()
    end = event.get("detail", {}).get("end-date", "soon")
    reason = f"trn-kit: Capacity Block ends at {end}, no new jobs"
    done = node_operations(settings).stop_new_work(reason)
    publish.arm_node_alarm(settings, False)  # the nodes leave with the block
    publish.notify(
        settings,
        f"{settings.stack_name}: Capacity Block ends at {end}; new work stopped",
        f"EC2 stops the block's instances from 30 minutes before {end}, about 10 minutes from now. "
        f"The kit {done}. Checkpoint to the shared file system or S3 now.",
    )
    return {"done": done}
