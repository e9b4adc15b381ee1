"""What every stack of the kit shares: an explicit environment, the configured AZs, tags."""

from __future__ import annotations

from aws_cdk import Environment, Stack, Tags
from constructs import Construct

from trn_constructs.config import ClusterConfig


class KitStack(Stack):
    """A stack in the configured account and region that never looks AZs up."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: ClusterConfig, description: str
    ) -> None:
        # Read by the availability_zones override, which CDK may call during construction.
        self._availability_zones = list(config.network.availability_zones)
        super().__init__(
            scope,
            construct_id,
            env=Environment(account=config.account, region=config.region),
            description=description,
        )
        for key, value in config.tags.items():
            Tags.of(self).add(key, value)

    @property
    def availability_zones(self) -> list[str]:
        """The configured AZs, so that no AZ lookup (an AWS call) happens at synth time."""
        return self._availability_zones
