"""The kit's one typed configuration, from CDK context: the frozen dataclasses constructs receive.

Every setting is a flat camelCase key in ``cdk.json`` -> ``context``, declared once in
trn_constructs.settings (key, default, kind of value, what is allowed) and overridable on the
command line with ``-c name=value``. Each setting is parsed on its own, then the rules between
settings (trn_constructs.setting_rules) run; every problem of one synth is one line of the
``ConfigError``, which ``app.py`` prints instead of a traceback.

Constructs receive the frozen dataclasses below; they never read context themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Mapping

from aws_cdk.aws_logs import RetentionDays

from trn_burnin.catalog import InstanceSpec
from trn_constructs.setting_rules import INSTANCE, check
from trn_constructs.settings import LOG_RETENTION, Values, read_settings

# From the CDK value to the days CloudFormation properties take.
RETENTION_DAYS: Mapping[RetentionDays, int] = {value: days for days, value in LOG_RETENTION.items()}


class ConfigError(ValueError):
    """A user's configuration mistakes, one line each; the lines are the whole story."""

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = lines

    def report(self) -> str:
        """What the kit's commands print: each line as a configuration error of its own."""
        return "\n".join(f"configuration error: {line}" for line in self.lines)


@dataclass(frozen=True)
class CapacityConfig:
    """The Capacity Block the cluster runs in."""

    instance: InstanceSpec
    instance_count: int
    reservation_id: str

    @property
    def ultraserver_count(self) -> int:
        return self.instance_count // self.instance.instances_per_ultraserver


@dataclass(frozen=True)
class CapacityPurchaseConfig:
    """A Capacity Block the kit finds and, only with ``confirm``, buys (``capacityPurchase``).

    The block is instanceType x instanceCount in availabilityZone; the times are UTC.
    """

    duration_hours: int
    earliest_start: datetime
    latest_start: datetime
    max_upfront_fee_usd: Decimal
    confirm: bool  # False: dry run, the offering is reported and nothing is bought


@dataclass(frozen=True)
class NetworkConfig:
    """Where the cluster lives. ``vpc_id`` None means the kit builds the VPC."""

    availability_zone: str
    secondary_availability_zone: str
    vpc_cidr: str
    vpc_id: str | None
    compute_subnet_id: str | None
    secondary_subnet_id: str | None

    @property
    def availability_zones(self) -> tuple[str, str]:
        """The capacity AZ first: it hosts the NAT gateway and every endpoint."""
        return (self.availability_zone, self.secondary_availability_zone)


@dataclass(frozen=True)
class FsxConfig:
    storage_capacity_gib: int
    throughput_mbps_per_tib: int
    metadata_mode: str
    metadata_iops: int | None
    efa_enabled: bool
    s3_path: str | None
    s3_file_system_path: str
    removal_policy: str
    mount_dir: str


@dataclass(frozen=True)
class EksConfig:
    kubernetes_version: str
    admin_role_arn: str | None
    public_access_cidrs: tuple[str, ...]  # empty: the API endpoint is private only
    system_node_instance_type: str
    system_node_count: int


@dataclass(frozen=True)
class SlurmConfig:
    head_node_instance_type: str
    additional_policy_arns: tuple[str, ...]  # attached to head and compute nodes
    provider_lambda_role_arn: str | None  # for ParallelCluster's provider functions


@dataclass(frozen=True)
class BurnInConfig:
    """How the handover proves the nodes."""

    dtype: str
    duration_seconds: int
    # The whole handover, from its start (the block's, or the deploy's after it) to the verdict,
    # cluster test included; the deploy waits for it inside CloudFormation's hour.
    timeout_minutes: int
    min_healthy_fraction: float
    # "node": the fraction counts passed nodes; "ultraserver": only nodes of UltraServers whose
    # every node passed (for jobs that need whole UltraServers).
    healthy_unit: str
    # A failed node's instance is terminated and the orchestrator relaunches into its slot, at most
    # max_replacements times per slot, while a replacement can still finish in the handover's time.
    replace_failed_nodes: bool
    max_replacements: int
    # Per-core rules: X of the catalog's peak, Y of the node's median core.
    min_peak_fraction: float
    min_median_fraction: float
    # The handover's second stage: nccom-test all-reduce across the passed nodes (2+ nodes).
    cluster_test: bool
    # Floor for its bus bandwidth, as a share of the catalog's EFA line rate per instance.
    cluster_test_min_bus_bandwidth_fraction: float


@dataclass(frozen=True)
class ClusterConfig:
    account: str
    region: str
    orchestrator: str
    capacity: CapacityConfig
    # None: the cluster uses the block named by capacityReservationId.
    capacity_purchase: CapacityPurchaseConfig | None
    capacity_end_notice_hours: int  # the scheduled notice before the block ends
    alert_email: str | None  # subscribed to the alert topic; None: no e-mail
    network: NetworkConfig
    fsx: FsxConfig
    log_retention: RetentionDays
    tags: Mapping[str, str]
    # SSM parameter holding the Trainium node image id (TrnAmiStack writes one per orchestrator);
    # None: ParallelCluster's official image, which installs the pinned Neuron stack when a node
    # starts, or the EKS Neuron AMI type.
    image_ssm_parameter: str | None
    burn_in: BurnInConfig
    eks: EksConfig
    slurm: SlurmConfig


def _capacity_purchase(v: Values) -> CapacityPurchaseConfig | None:
    """The block to buy; None unless capacityPurchase is true. Nothing is bought unless
    capacityPurchaseConfirm is true as well, and never above capacityPurchaseMaxUpfrontFeeUsd."""
    if not v["capacityPurchase"]:
        return None
    return CapacityPurchaseConfig(
        duration_hours=v["capacityPurchaseDurationHours"],
        earliest_start=v["capacityPurchaseEarliestStart"],
        latest_start=v["capacityPurchaseLatestStart"],
        max_upfront_fee_usd=v["capacityPurchaseMaxUpfrontFeeUsd"],
        confirm=v["capacityPurchaseConfirm"],
    )


def _config(v: Values) -> ClusterConfig:
    return ClusterConfig(
        account=v["account"],
        region=v["region"],
        orchestrator=v["orchestrator"],
        capacity=CapacityConfig(
            instance=v[INSTANCE], instance_count=v["instanceCount"], reservation_id=v["capacityReservationId"]
        ),
        capacity_purchase=_capacity_purchase(v),
        capacity_end_notice_hours=v["capacityEndNoticeHours"],
        alert_email=v["alertEmail"] or None,
        network=NetworkConfig(
            availability_zone=v["availabilityZone"],
            secondary_availability_zone=v["secondaryAvailabilityZone"],
            vpc_cidr=v["vpcCidr"],
            vpc_id=v["vpcId"] or None,
            compute_subnet_id=v["computeSubnetId"] or None,
            secondary_subnet_id=v["secondarySubnetId"] or None,
        ),
        fsx=FsxConfig(
            storage_capacity_gib=v["fsxStorageCapacityGiB"],
            throughput_mbps_per_tib=v["fsxThroughputMBpsPerTiB"],
            metadata_mode=v["fsxMetadataMode"],
            metadata_iops=v["fsxMetadataIops"] or None,
            efa_enabled=v["fsxEfaEnabled"],
            s3_path=v["fsxS3Path"] or None,
            s3_file_system_path=v["fsxS3FileSystemPath"],
            removal_policy=v["fsxRemovalPolicy"],
            mount_dir=v["fsxMountDir"],
        ),
        log_retention=LOG_RETENTION[v["logRetentionDays"]],
        tags=v["tags"],
        image_ssm_parameter=v["imageSsmParameter"] or None,
        burn_in=BurnInConfig(
            dtype=v["burnInDtype"],
            duration_seconds=v["burnInDurationSeconds"],
            timeout_minutes=v["burnInTimeoutMinutes"],
            min_healthy_fraction=v["burnInMinHealthyFraction"],
            healthy_unit=v["burnInHealthyUnit"],
            replace_failed_nodes=v["burnInReplaceFailedNodes"],
            max_replacements=v["burnInMaxReplacements"],
            min_peak_fraction=v["burnInMinPeakFraction"],
            min_median_fraction=v["burnInMinMedianFraction"],
            cluster_test=v["clusterTest"],
            cluster_test_min_bus_bandwidth_fraction=v["clusterTestMinBusBandwidthFraction"],
        ),
        eks=EksConfig(
            kubernetes_version=v["eksKubernetesVersion"],
            admin_role_arn=v["eksAdminRoleArn"] or None,
            public_access_cidrs=v["eksPublicAccessCidrs"],
            system_node_instance_type=v["eksSystemNodeInstanceType"],
            system_node_count=v["eksSystemNodeCount"],
        ),
        slurm=SlurmConfig(
            head_node_instance_type=v["slurmHeadNodeInstanceType"],
            additional_policy_arns=v["slurmAdditionalPolicyArns"],
            provider_lambda_role_arn=v["slurmProviderLambdaRoleArn"] or None,
        ),
    )


def parse_config(raw: Mapping[str, Any], now: datetime | None = None) -> ClusterConfig:
    """Validate raw context values (from cdk.json and -c) into a ClusterConfig; ConfigError has a
    line for every problem.

    ``now`` (default: the clock) bounds how far ahead a Capacity Block purchase may start.
    """
    values = read_settings(raw)
    check(values, now or datetime.now(timezone.utc))
    if values.lines:
        raise ConfigError(*values.lines)
    return _config(values)
