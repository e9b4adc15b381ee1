"""The instances EC2 runs in the Capacity Block: what the handover judges, whatever the orchestrator
thinks of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Pending counts: a replacement that is booting holds its slot.
IN_THE_BLOCK = ("pending", "running")


@dataclass(frozen=True)
class Instance:
    instance_id: str
    launched: datetime
    # EC2's CapacityBlockId: for UltraServer blocks it names the UltraServer the instance is in.
    ultraserver_id: str | None


def block_instances(ec2: Any, reservation_id: str) -> list[Instance]:
    filters = [
        {"Name": "capacity-reservation-id", "Values": [reservation_id]},
        {"Name": "instance-state-name", "Values": list(IN_THE_BLOCK)},
    ]
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            for item in reservation["Instances"]:
                found.append(
                    Instance(item["InstanceId"], item["LaunchTime"], item.get("CapacityBlockId"))
                )
    return sorted(found, key=lambda i: (i.launched, i.instance_id))
