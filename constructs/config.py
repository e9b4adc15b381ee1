"""The kit's one typed configuration, parsed and validated from CDK context.

Every setting is a flat camelCase key in ``cdk.json`` -> ``context`` and can be overridden on the
command line with ``-c name=value``. Values given with ``-c`` arrive as strings, so every parser
accepts the string form too. Any invalid value raises ``ConfigError`` with one line naming the
setting, the bad value and what is allowed; ``app.py`` prints that line instead of a traceback.

Constructs receive the frozen dataclasses below; they never read context themselves.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping, TypeVar

from aws_cdk.aws_logs import RetentionDays

from trn_burnin.catalog import (
    CATALOG, OVERRIDES, CatalogOverrideError, InstanceSpec, apply_overrides, find_by_instance_type,
)
from trn_burnin.thresholds import DEFAULT_MIN_MEDIAN_FRACTION, DEFAULT_MIN_PEAK_FRACTION
from trn_constructs.timeline import HANDOVER_MAX_MINUTES, SAFETY, Budgets
# The purchase handler's own limits, so synth rejects what the deployment would.
from trn_constructs.capacity_purchase.handler.capacity_block import request as rules

T = TypeVar("T")

MIN_BURN_IN_SECONDS = 30


class ConfigError(ValueError):
    """A user's configuration mistake; the message is the whole story."""


ORCHESTRATORS = ("eks", "slurm")
FSX_THROUGHPUTS_MBPS_PER_TIB = (125, 250, 500, 1000)
FSX_METADATA_MODES = ("AUTOMATIC", "USER_PROVISIONED")
FSX_METADATA_IOPS_STEPS = (1500, 3000, 6000, 12000)
FSX_METADATA_IOPS_MAX = 192000
REMOVAL_POLICIES = ("retain", "destroy")
# 1.34 is the first release the Neuron DRA driver and UltraServer operator support.
EKS_KUBERNETES_VERSIONS = ("1.34", "1.35")
# The retention periods CloudWatch Logs accepts, in days.
LOG_RETENTION: Mapping[int, RetentionDays] = {
    1: RetentionDays.ONE_DAY, 3: RetentionDays.THREE_DAYS, 5: RetentionDays.FIVE_DAYS,
    7: RetentionDays.ONE_WEEK, 14: RetentionDays.TWO_WEEKS, 30: RetentionDays.ONE_MONTH,
    60: RetentionDays.TWO_MONTHS, 90: RetentionDays.THREE_MONTHS, 120: RetentionDays.FOUR_MONTHS,
    150: RetentionDays.FIVE_MONTHS, 180: RetentionDays.SIX_MONTHS, 365: RetentionDays.ONE_YEAR,
    400: RetentionDays.THIRTEEN_MONTHS, 545: RetentionDays.EIGHTEEN_MONTHS,
    731: RetentionDays.TWO_YEARS, 1096: RetentionDays.THREE_YEARS, 1827: RetentionDays.FIVE_YEARS,
    2192: RetentionDays.SIX_YEARS, 2557: RetentionDays.SEVEN_YEARS,
    2922: RetentionDays.EIGHT_YEARS, 3288: RetentionDays.NINE_YEARS,
    3653: RetentionDays.TEN_YEARS,
}  # fmt: skip
# The same, from the CDK value to the days CloudFormation properties take.
RETENTION_DAYS: Mapping[RetentionDays, int] = {value: days for days, value in LOG_RETENTION.items()}

# Availability Zone names of regions that offer Trainium. Names (not IDs) differ in mapping per
# account but the set of letters per region is fixed, so this is enough to reject a typo at synth
# time without an AWS call. A region not listed here gets a format check only.
REGION_AZ_LETTERS: Mapping[str, str] = {
    "us-east-1": "abcdef",
    "us-east-2": "abc",
    "us-west-2": "abcd",
    "ap-northeast-1": "acd",
    "ap-south-1": "abc",
    "ap-southeast-2": "abc",
    "ap-southeast-4": "abc",
    "eu-north-1": "abc",
    "sa-east-1": "abc",
}

_SUBNET_ID = r"subnet-[0-9a-f]{8}([0-9a-f]{9})?"


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


def _fail(setting: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"setting '{setting}': got {value!r}; allowed: {allowed}")


class _Context:
    """Typed access to raw context values, each read producing a one-line error on bad input."""

    def __init__(self, raw: Mapping[str, Any]):
        self._raw = raw

    def _get(self, name: str, default: Any) -> Any:
        value = self._raw.get(name, default)
        return default if value is None else value

    def string(self, name: str, default: str = "") -> str:
        value = self._get(name, default)
        if not isinstance(value, str):
            raise _fail(name, value, "a string")
        return value.strip()

    def optional_string(self, name: str) -> str | None:
        return self.string(name) or None

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(name, default)
        if value not in choices:
            raise _fail(name, value, " or ".join(choices))
        return value

    def integer(self, name: str, default: int) -> int:
        value = self._get(name, default)
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(name, value, "a whole number")
        return value

    def fraction(self, name: str, default: float) -> float:
        """A number in (0, 1]."""
        given = self._get(name, default)
        allowed = "a number greater than 0 and at most 1"
        try:
            value = float(given) if isinstance(given, (str, int, float)) else None
        except ValueError:
            value = None
        if isinstance(given, bool) or value is None or not 0 < value <= 1:
            raise _fail(name, given, allowed)
        return value

    def positive_amount(self, name: str, allowed: str) -> Decimal:
        """A decimal amount greater than 0, from a JSON number or its string form."""
        given = self._get(name, SETTINGS[name])
        value = None
        if isinstance(given, (str, int, float)) and not isinstance(given, bool):
            try:
                value = Decimal(str(given).strip())
            except InvalidOperation:
                pass
        if value is None or not value.is_finite() or value <= 0:
            raise _fail(name, given, allowed)
        return value

    def utc_time(self, name: str) -> datetime:
        allowed = "an ISO-8601 UTC time such as 2026-12-01T11:30:00Z"
        value = self.matching(name, r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?(Z|\+00:00)", allowed)
        try:
            return datetime.fromisoformat(value)
        except ValueError:  # e.g. a 31st of November
            raise _fail(name, value, allowed) from None

    def bounded_integer(self, name: str, low: int, high: int) -> int:
        value = self.integer(name, SETTINGS[name])
        if not low <= value <= high:
            raise _fail(name, value, f"a whole number {low}-{high}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise _fail(name, value, "true or false")
        return value

    def mapping(self, name: str, value_check: Callable[[Any], bool], allowed: str) -> dict:
        value = self._get(name, {})
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError:
                raise _fail(name, value, allowed) from None
        if not isinstance(value, dict) or not all(value_check(v) for v in value.values()):
            raise _fail(name, value, allowed)
        return value

    def string_list(self, name: str, pattern: str, allowed: str) -> tuple[str, ...]:
        """A JSON list, or a comma-separated string as typed with -c."""
        value = self._get(name, [])
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list) or not all(
            isinstance(item, str) and re.fullmatch(pattern, item) for item in value
        ):
            raise _fail(name, value, allowed)
        return tuple(value)

    def matching(self, name: str, pattern: str, allowed: str, default: str = "") -> str:
        value = self.string(name, default)
        if not re.fullmatch(pattern, value):
            raise _fail(name, value, allowed)
        return value


# Every setting the kit reads, with its default; cdk.json carries the same names.
SETTINGS: Mapping[str, Any] = {
    "account": None,
    "region": None,
    "orchestrator": "slurm",
    "instanceType": "trn2.48xlarge",
    "instanceCount": 1,
    "capacityReservationId": None,
    "capacityPurchase": False,
    "capacityPurchaseDurationHours": 0,
    "capacityPurchaseEarliestStart": "",
    "capacityPurchaseLatestStart": "",
    "capacityPurchaseMaxUpfrontFeeUsd": 0,
    "capacityPurchaseConfirm": False,
    "capacityEndNoticeHours": 12,
    "alertEmail": "",
    "availabilityZone": None,
    "secondaryAvailabilityZone": "",
    "vpcCidr": "10.0.0.0/16",
    "vpcId": "",
    "computeSubnetId": "",
    "secondarySubnetId": "",
    "fsxStorageCapacityGiB": 1200,
    "fsxThroughputMBpsPerTiB": 250,
    "fsxMetadataMode": "AUTOMATIC",
    "fsxMetadataIops": 0,
    "fsxEfaEnabled": False,
    "fsxS3Path": "",
    "fsxS3FileSystemPath": "/s3",
    "fsxRemovalPolicy": "retain",
    "fsxMountDir": "/fsx",
    "logRetentionDays": 90,
    "catalogOverrides": {},
    "tags": {},
    "imageSsmParameter": "",
    "burnInDtype": "bf16",
    "burnInDurationSeconds": 180,
    "burnInTimeoutMinutes": 55,
    "burnInMinHealthyFraction": 1.0,
    "burnInHealthyUnit": "node",
    "burnInReplaceFailedNodes": True,
    "burnInMaxReplacements": 1,
    "burnInMinPeakFraction": DEFAULT_MIN_PEAK_FRACTION,
    "burnInMinMedianFraction": DEFAULT_MIN_MEDIAN_FRACTION,
    "clusterTest": True,
    "clusterTestMinBusBandwidthFraction": 0.25,
    "eksKubernetesVersion": "1.34",
    "eksAdminRoleArn": "",
    "eksPublicAccessCidrs": [],
    "eksSystemNodeInstanceType": "m7i.xlarge",
    "eksSystemNodeCount": 2,
    "slurmHeadNodeInstanceType": "m7i.2xlarge",
    "slurmAdditionalPolicyArns": [],
    "slurmProviderLambdaRoleArn": "",
}

_ROLE_ARN = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+"
_INSTANCE_TYPE = r"[a-z][a-z0-9-]*\.[a-z0-9]+"


def _check_unknown_settings(raw: Mapping[str, Any]) -> None:
    # CDK's own context keys carry ':', '@' or '/', so a plain camelCase key we do not know is a
    # typo, e.g. `-c instanceTyep=...`, which would otherwise be silently ignored.
    for key in raw:
        if re.fullmatch(r"[a-z][A-Za-z0-9]*", key) and key not in SETTINGS:
            raise ConfigError(
                f"setting '{key}' is not a setting of this kit; known settings: "
                + ", ".join(SETTINGS)
            )


def _parse_catalog(ctx: _Context) -> Mapping[str, InstanceSpec]:
    overrides = ctx.mapping(
        "catalogOverrides",
        lambda v: isinstance(v, dict) and set(v) <= set(OVERRIDES),
        f"an object keyed by catalog entry ({', '.join(CATALOG)}) whose values set "
        f"{', '.join(OVERRIDES)}",
    )
    unknown = sorted(set(overrides) - set(CATALOG))
    if unknown:
        raise _fail("catalogOverrides", unknown[0], f"catalog entries {', '.join(CATALOG)}")
    try:
        return apply_overrides(overrides)
    except CatalogOverrideError as error:
        raise _fail(f"catalogOverrides.{error.key}.{error.field}", error.value, error.allowed) from None


def _parse_capacity(ctx: _Context, catalog: Mapping[str, InstanceSpec]) -> CapacityConfig:
    known = ", ".join(spec.instance_type for spec in catalog.values())
    instance_type = ctx.string("instanceType", SETTINGS["instanceType"])
    instance = find_by_instance_type(instance_type, catalog)
    if instance is None:
        raise _fail("instanceType", instance_type, known)
    count = ctx.integer("instanceCount", SETTINGS["instanceCount"])
    size = instance.instances_per_ultraserver
    if count < 1 or count % size:
        allowed = "a whole number >= 1"
        if size > 1:
            allowed = (
                f"a multiple of {size}: {instance_type} comes in {instance.ultraserver_type} "
                f"UltraServers of {size} instances, so counts must fill whole UltraServers "
                f"({size}, {2 * size}, {3 * size}, ...)"
            )
        raise _fail("instanceCount", count, allowed)
    if ctx.boolean("capacityPurchase", SETTINGS["capacityPurchase"]):
        reservation_id = ctx.matching(
            "capacityReservationId",
            "",
            "empty with capacityPurchase=true (the kit buys the block; holding one and buying "
            "one exclude each other)",
        )
    else:
        reservation_id = ctx.matching(
            "capacityReservationId",
            r"cr-[0-9a-f]{17}",
            "a Capacity Block reservation id: 'cr-' followed by 17 lowercase hex digits "
            "(or capacityPurchase=true to have the kit buy a block)",
        )
    return CapacityConfig(instance=instance, instance_count=count, reservation_id=reservation_id)


def _parse_capacity_purchase(
    ctx: _Context, capacity: CapacityConfig, now: datetime
) -> CapacityPurchaseConfig | None:
    """The block to buy; None unless capacityPurchase is true. Nothing is bought unless
    capacityPurchaseConfirm is true as well, and never above capacityPurchaseMaxUpfrontFeeUsd."""
    confirm = ctx.boolean("capacityPurchaseConfirm", SETTINGS["capacityPurchaseConfirm"])
    if not ctx.boolean("capacityPurchase", SETTINGS["capacityPurchase"]):
        if confirm:
            raise _fail("capacityPurchaseConfirm", confirm, "false unless capacityPurchase is true")
        return None
    limit = rules.MAX_INSTANCES_PER_BLOCK
    if capacity.instance_count > limit:
        spec = capacity.instance
        size = spec.instances_per_ultraserver
        most = f"{limit} instances"
        if size > 1:
            most = f"{limit // size * size} instances ({limit // size} x {spec.ultraserver_type})"
        raise _fail(
            "instanceCount",
            capacity.instance_count,
            f"at most {most} with capacityPurchase=true: EC2 sells at most {limit} instances per "
            "Capacity Block (and 256 across an account's blocks)",
        )
    hours = ctx.integer("capacityPurchaseDurationHours", SETTINGS["capacityPurchaseDurationHours"])
    if not rules.valid_duration_hours(hours):
        raise _fail(
            "capacityPurchaseDurationHours",
            hours,
            "1-14 days in whole days (24-336, multiples of 24), or 7-day steps up to 182 days "
            "(multiples of 168 up to 4368)",
        )
    earliest = ctx.utc_time("capacityPurchaseEarliestStart")
    latest = ctx.utc_time("capacityPurchaseLatestStart")
    if latest < earliest:
        raise _fail(
            "capacityPurchaseLatestStart",
            ctx.string("capacityPurchaseLatestStart"),
            f"a time not before capacityPurchaseEarliestStart ({rules.format_time(earliest)})",
        )
    # Only the future bound is checked here: a window in the past stays valid, so a stack whose
    # block was bought keeps synthesizing. The handler rejects an expired window before buying.
    horizon = now + rules.MAX_START_AHEAD
    for name, moment in (
        ("capacityPurchaseEarliestStart", earliest),
        ("capacityPurchaseLatestStart", latest),
    ):
        if moment > horizon:
            raise _fail(
                name,
                ctx.string(name),
                f"a time at most 8 weeks ahead, i.e. before {rules.format_time(horizon)} "
                "(EC2 sells Capacity Blocks starting at most 8 weeks ahead)",
            )
    return CapacityPurchaseConfig(
        duration_hours=hours,
        earliest_start=earliest,
        latest_start=latest,
        max_upfront_fee_usd=ctx.positive_amount(
            "capacityPurchaseMaxUpfrontFeeUsd",
            "a positive amount of US dollars such as 25000, the most the kit may pay for the "
            "block (required with capacityPurchase=true)",
        ),
        confirm=confirm,
    )


def _az_allowed(region: str) -> str:
    letters = REGION_AZ_LETTERS.get(region)
    if letters:
        return "one of " + ", ".join(region + letter for letter in letters)
    return f"an Availability Zone name of {region} ({region} followed by one letter)"


def _parse_az(ctx: _Context, name: str, region: str, default: str = "") -> str:
    az = ctx.string(name) or default
    letters = REGION_AZ_LETTERS.get(region, "abcdefghijklmnopqrstuvwxyz")
    if not (az.startswith(region) and len(az) == len(region) + 1 and az[-1] in letters):
        raise _fail(name, az, _az_allowed(region))
    return az


def _parse_network(ctx: _Context, region: str) -> NetworkConfig:
    az = _parse_az(ctx, "availabilityZone", region)
    # EKS needs subnets in two AZs; the second one carries no Trainium capacity.
    default_secondary = next(
        (region + letter for letter in REGION_AZ_LETTERS.get(region, "") if region + letter != az),
        "",
    )
    secondary = _parse_az(ctx, "secondaryAvailabilityZone", region, default_secondary)
    if secondary == az:
        raise _fail(
            "secondaryAvailabilityZone", secondary, f"an AZ of {region} other than {az}"
        )
    cidr = ctx.matching(
        "vpcCidr",
        r"10\.\d{1,3}\.0\.0/16|172\.(1[6-9]|2\d|3[01])\.0\.0/16|192\.168\.0\.0/16",
        "a private /16 IPv4 block such as 10.0.0.0/16",
        SETTINGS["vpcCidr"],
    )
    vpc_id = ctx.matching(
        "vpcId", r"(vpc-[0-9a-f]{8}([0-9a-f]{9})?)?", "empty (build a VPC) or a VPC id vpc-..."
    )
    subnet_ids = {}
    for name, subnet_az in (("computeSubnetId", az), ("secondarySubnetId", secondary)):
        if vpc_id:
            subnet_ids[name] = ctx.matching(
                name, _SUBNET_ID, f"a subnet id subnet-... in {subnet_az} (required with vpcId)"
            )
        else:
            ctx.matching(name, "", "empty unless vpcId is set")
    return NetworkConfig(
        availability_zone=az,
        secondary_availability_zone=secondary,
        vpc_cidr=cidr,
        vpc_id=vpc_id or None,
        compute_subnet_id=subnet_ids.get("computeSubnetId"),
        secondary_subnet_id=subnet_ids.get("secondarySubnetId"),
    )


def _parse_fsx(ctx: _Context) -> FsxConfig:
    capacity = ctx.integer("fsxStorageCapacityGiB", SETTINGS["fsxStorageCapacityGiB"])
    if not (capacity in (1200, 2400) or (capacity > 0 and capacity % 2400 == 0)):
        raise _fail("fsxStorageCapacityGiB", capacity, "1200, 2400, or a multiple of 2400")
    throughput = ctx.integer("fsxThroughputMBpsPerTiB", SETTINGS["fsxThroughputMBpsPerTiB"])
    if throughput not in FSX_THROUGHPUTS_MBPS_PER_TIB:
        raise _fail(
            "fsxThroughputMBpsPerTiB", throughput, ", ".join(map(str, FSX_THROUGHPUTS_MBPS_PER_TIB))
        )
    mode = ctx.choice("fsxMetadataMode", FSX_METADATA_MODES, SETTINGS["fsxMetadataMode"])
    iops = ctx.integer("fsxMetadataIops", SETTINGS["fsxMetadataIops"])
    if mode == "USER_PROVISIONED":
        if not (
            iops in FSX_METADATA_IOPS_STEPS
            or (0 < iops <= FSX_METADATA_IOPS_MAX and iops % 12000 == 0)
        ):
            raise _fail(
                "fsxMetadataIops",
                iops,
                "1500, 3000, 6000, 12000, or a multiple of 12000 up to 192000 "
                "(with fsxMetadataMode=USER_PROVISIONED)",
            )
    elif iops:
        raise _fail("fsxMetadataIops", iops, "0 unless fsxMetadataMode is USER_PROVISIONED")
    s3_path = ctx.matching(
        "fsxS3Path",
        r"(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?)?",
        "empty (no S3 link) or an S3 URI s3://bucket[/prefix]",
    )
    absolute_path = r"/[A-Za-z0-9._/-]*"
    return FsxConfig(
        storage_capacity_gib=capacity,
        throughput_mbps_per_tib=throughput,
        metadata_mode=mode,
        metadata_iops=iops or None,
        efa_enabled=ctx.boolean("fsxEfaEnabled", SETTINGS["fsxEfaEnabled"]),
        s3_path=s3_path or None,
        s3_file_system_path=ctx.matching(
            "fsxS3FileSystemPath",
            absolute_path,
            "an absolute path inside the file system such as /s3",
            SETTINGS["fsxS3FileSystemPath"],
        ),
        removal_policy=ctx.choice("fsxRemovalPolicy", REMOVAL_POLICIES, SETTINGS["fsxRemovalPolicy"]),
        mount_dir=ctx.matching(
            "fsxMountDir", absolute_path, "an absolute path such as /fsx", SETTINGS["fsxMountDir"]
        ),
    )


def _parse_burn_in(ctx: _Context, instance: InstanceSpec, orchestrator: str, image: str | None) -> BurnInConfig:
    dtypes = instance.core.supported_dtypes
    units = ("node", "ultraserver") if instance.is_ultraserver else ("node",)
    config = BurnInConfig(
        dtype=ctx.choice("burnInDtype", dtypes, SETTINGS["burnInDtype"]),
        duration_seconds=ctx.bounded_integer("burnInDurationSeconds", MIN_BURN_IN_SECONDS, 3600),
        timeout_minutes=ctx.bounded_integer("burnInTimeoutMinutes", 30, HANDOVER_MAX_MINUTES),
        min_healthy_fraction=ctx.fraction(
            "burnInMinHealthyFraction", SETTINGS["burnInMinHealthyFraction"]
        ),
        healthy_unit=ctx.choice("burnInHealthyUnit", units, SETTINGS["burnInHealthyUnit"]),
        replace_failed_nodes=ctx.boolean("burnInReplaceFailedNodes", SETTINGS["burnInReplaceFailedNodes"]),
        max_replacements=ctx.bounded_integer("burnInMaxReplacements", 0, 3),
        min_peak_fraction=ctx.fraction("burnInMinPeakFraction", SETTINGS["burnInMinPeakFraction"]),
        min_median_fraction=ctx.fraction("burnInMinMedianFraction", SETTINGS["burnInMinMedianFraction"]),
        cluster_test=ctx.boolean("clusterTest", SETTINGS["clusterTest"]),
        cluster_test_min_bus_bandwidth_fraction=ctx.fraction(
            "clusterTestMinBusBandwidthFraction", SETTINGS["clusterTestMinBusBandwidthFraction"]
        ),
    )
    _check_budget(config, orchestrator, image)
    return config


def _check_budget(config: BurnInConfig, orchestrator: str, image: str | None) -> None:
    """Every node's first report and the cluster test must fit the handover (constructs/timeline.py)."""
    kind = "kit" if image else "default"
    budgets = Budgets(orchestrator, kind, config.duration_seconds)
    needed = budgets.first_pass_minutes(config.cluster_test)
    if needed <= config.timeout_minutes:
        return
    longest = budgets.longest_duration_seconds(config.timeout_minutes, config.cluster_test)
    test = f" and {budgets.cluster_test_minutes} for the cluster test" if config.cluster_test else ""
    if longest < MIN_BURN_IN_SECONDS:
        least = math.ceil(Budgets(orchestrator, kind, MIN_BURN_IN_SECONDS).first_pass_minutes(config.cluster_test))
        raise _fail(
            "burnInTimeoutMinutes",
            config.timeout_minutes,
            f"at least {least} on {orchestrator} with the {kind} image, even with burnInDurationSeconds at its "
            f"least ({MIN_BURN_IN_SECONDS}): a node needs about {budgets.setup_minutes:.0f} minutes to boot and "
            f"set up before its burn-in (x{SAFETY:g} margin){test}",
        )
    raise _fail(
        "burnInDurationSeconds",
        config.duration_seconds,
        f"at most {longest} with burnInTimeoutMinutes={config.timeout_minutes} on {orchestrator} with the "
        f"{kind} image: a node needs about {budgets.node_minutes:.0f} minutes from launch to its report "
        f"(x{SAFETY:g} margin){test}, {needed:.0f} minutes in all (raise burnInTimeoutMinutes, at most "
        f"{HANDOVER_MAX_MINUTES}, or shorten burnInDurationSeconds)",
    )


def _parse_image(ctx: _Context, orchestrator: str) -> str | None:
    default = (
        "the EKS Neuron AMI"
        if orchestrator == "eks"
        else "ParallelCluster's image, Neuron installed at node start"
    )
    return (
        ctx.matching(
            "imageSsmParameter",
            r"(/[A-Za-z0-9_.-]+)*",
            f"empty ({default}) or an SSM parameter name such as /trn-kit/ami/{orchestrator}",
        )
        or None
    )


def _parse_eks(ctx: _Context) -> EksConfig:
    count = ctx.integer("eksSystemNodeCount", SETTINGS["eksSystemNodeCount"])
    if not 1 <= count <= 10:
        raise _fail("eksSystemNodeCount", count, "a whole number 1-10")
    return EksConfig(
        kubernetes_version=ctx.choice(
            "eksKubernetesVersion", EKS_KUBERNETES_VERSIONS, SETTINGS["eksKubernetesVersion"]
        ),
        admin_role_arn=ctx.matching(
            "eksAdminRoleArn", f"({_ROLE_ARN})?", "empty or an IAM role ARN arn:aws:iam::<account>:role/<name>"
        )
        or None,
        public_access_cidrs=ctx.string_list(
            "eksPublicAccessCidrs",
            r"\d{1,3}(\.\d{1,3}){3}/\d{1,2}",
            "a list of IPv4 CIDR blocks allowed to reach the public API endpoint "
            "(empty: private endpoint only)",
        ),
        system_node_instance_type=ctx.matching(
            "eksSystemNodeInstanceType",
            _INSTANCE_TYPE,
            "an EC2 instance type such as m7i.xlarge",
            SETTINGS["eksSystemNodeInstanceType"],
        ),
        system_node_count=count,
    )


# CloudWatch Logs retention periods ParallelCluster accepts: a subset of CloudWatch's own.
SLURM_LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653)


def _parse_slurm(ctx: _Context) -> SlurmConfig:
    if ctx.choice("orchestrator", ORCHESTRATORS, SETTINGS["orchestrator"]) == "slurm":
        retention = ctx.integer("logRetentionDays", SETTINGS["logRetentionDays"])
        if retention not in SLURM_LOG_RETENTION_DAYS:
            raise _fail(
                "logRetentionDays",
                retention,
                ", ".join(map(str, SLURM_LOG_RETENTION_DAYS)) + " (ParallelCluster's choices)",
            )
    return SlurmConfig(
        head_node_instance_type=ctx.matching(
            "slurmHeadNodeInstanceType",
            _INSTANCE_TYPE,
            "an EC2 instance type such as m7i.2xlarge",
            SETTINGS["slurmHeadNodeInstanceType"],
        ),
        additional_policy_arns=ctx.string_list(
            "slurmAdditionalPolicyArns",
            r"arn:aws[a-z-]*:iam::(aws|\d{12}):policy/[\w+=,.@/-]+",
            "a list of IAM policy ARNs",
        ),
        provider_lambda_role_arn=ctx.matching(
            "slurmProviderLambdaRoleArn", f"({_ROLE_ARN})?", "empty or an IAM role ARN"
        )
        or None,
    )


def parse_config(raw: Mapping[str, Any], now: datetime | None = None) -> ClusterConfig:
    """Validate raw context values (from cdk.json and -c) into a ClusterConfig.

    ``now`` (default: the clock) bounds how far ahead a Capacity Block purchase may start.
    """
    _check_unknown_settings(raw)
    ctx = _Context(raw)
    account = ctx.matching("account", r"\d{12}", "a 12-digit AWS account id")
    region = ctx.matching(
        "region", r"[a-z]{2}(-gov)?-[a-z]+-\d", "an AWS region name such as us-east-2"
    )
    orchestrator = ctx.choice("orchestrator", ORCHESTRATORS, SETTINGS["orchestrator"])
    catalog = _parse_catalog(ctx)
    retention = ctx.integer("logRetentionDays", SETTINGS["logRetentionDays"])
    if retention not in LOG_RETENTION:
        raise _fail("logRetentionDays", retention, ", ".join(map(str, LOG_RETENTION)))
    tags = ctx.mapping(
        "tags",
        lambda v: isinstance(v, str) and len(v) <= 256,
        "an object of string tag values, e.g. {\"team\": \"ml-platform\"}",
    )
    capacity = _parse_capacity(ctx, catalog)
    return ClusterConfig(
        account=account,
        region=region,
        orchestrator=orchestrator,
        capacity=capacity,
        capacity_purchase=_parse_capacity_purchase(ctx, capacity, now or datetime.now(timezone.utc)),
        capacity_end_notice_hours=ctx.bounded_integer("capacityEndNoticeHours", 1, 168),
        alert_email=ctx.matching(
            "alertEmail",
            r"([^@\s]+@[^@\s]+\.[^@\s]+)?",
            "empty (no e-mail) or one e-mail address such as ml-team@example.com",
        )
        or None,
        network=_parse_network(ctx, region),
        fsx=_parse_fsx(ctx),
        log_retention=LOG_RETENTION[retention],
        tags=tags,
        image_ssm_parameter=_parse_image(ctx, orchestrator),
        burn_in=_parse_burn_in(ctx, capacity.instance, orchestrator, _parse_image(ctx, orchestrator)),
        eks=_parse_eks(ctx),
        slurm=_parse_slurm(ctx),
    )
