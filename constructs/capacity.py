"""Capacity: the seam between where the Capacity Block comes from and who launches into it."""

from __future__ import annotations

from dataclasses import dataclass

from trn_burnin.catalog import InstanceSpec
from trn_constructs.config import CapacityConfig


@dataclass(frozen=True)
class CapacityTarget:
    """What an orchestrator needs to launch Trainium nodes into a Capacity Block.

    ``reservation_id`` is a plain string for a block the user already holds, or a deploy-time
    token when the kit buys the block itself; consumers must treat it as opaque.
    """

    reservation_id: str
    availability_zone: str
    instance: InstanceSpec
    instance_count: int

    @property
    def instance_type(self) -> str:
        return self.instance.instance_type

    @property
    def ultraserver_count(self) -> int:
        return self.instance_count // self.instance.instances_per_ultraserver

    @classmethod
    def existing(cls, capacity: CapacityConfig, availability_zone: str) -> "CapacityTarget":
        """A block the user already holds, named by ``capacityReservationId``."""
        return cls(
            reservation_id=capacity.reservation_id,
            availability_zone=availability_zone,
            instance=capacity.instance,
            instance_count=capacity.instance_count,
        )
