"""The rules between settings, in one place. Each rule reads the settings it involves and rejects
one of them with one line; a rule that reads a setting which already failed is skipped (Skip), so one
mistake gives one line, not a cascade. Rules run in order: one may derive a value (the catalog entry
of instanceType) or resolve a default (secondaryAvailabilityZone) that later rules read.
"""

from __future__ import annotations

import math
import string
from datetime import datetime
from functools import partial
from typing import Callable, Mapping

from trn_burnin.catalog import find_by_instance_type
from trn_constructs.capacity_purchase.handler.capacity_block.request import (
    KIT_TAG_COUNT, MAX_INSTANCES_PER_BLOCK, MAX_START_AHEAD, MAX_TAGS_PER_RESOURCE, format_time, valid_duration_hours,
)
from trn_constructs.setting_kinds import UtcTime
from trn_constructs.settings import MIN_BURN_IN_SECONDS, SETTINGS, Skip, Values
from trn_constructs.timeline import HANDOVER_MAX_MINUTES, SAFETY, Budgets

INSTANCE = "instance"  # derived: the catalog entry (overrides applied) of instanceType
NOW = "now"  # the clock, which bounds how far ahead a purchase may start

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
FSX_METADATA_IOPS_STEPS = (1500, 3000, 6000, 12000)
FSX_METADATA_IOPS_MAX = 192000
# CloudWatch Logs retention periods ParallelCluster accepts: a subset of CloudWatch's own.
SLURM_LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653)
# ParallelCluster's own (pcluster.constants): tag keys it reserves, and at most this many tags.
PCLUSTER_TAG_PREFIX = "parallelcluster:"
PCLUSTER_MAX_TAGS = 40

PURCHASE_WINDOW = ("capacityPurchaseEarliestStart", "capacityPurchaseLatestStart")


def instance_in_catalog(v: Values) -> None:
    catalog = v["catalogOverrides"]
    spec = find_by_instance_type(v["instanceType"], catalog)
    if spec is None:
        v.reject("instanceType", ", ".join(entry.instance_type for entry in catalog.values()))
    else:
        v.derive(INSTANCE, spec)


def count_fills_ultraservers(v: Values) -> None:
    spec, count = v[INSTANCE], v["instanceCount"]
    size = spec.instances_per_ultraserver
    if count >= 1 and count % size == 0:
        return
    allowed = "a whole number >= 1"
    if size > 1:
        allowed = (
            f"a multiple of {size}: {spec.instance_type} comes in {spec.ultraserver_type} UltraServers of "
            f"{size} instances, so counts must fill whole UltraServers ({size}, {2 * size}, {3 * size}, ...)"
        )
    v.reject("instanceCount", allowed)


def reservation_or_purchase(v: Values) -> None:
    buying, reservation = v["capacityPurchase"], v["capacityReservationId"]
    if buying and reservation:
        v.reject(
            "capacityReservationId",
            "empty with capacityPurchase=true (the kit buys the block; holding one and buying one exclude "
            "each other)",
        )
    elif not buying and not reservation:
        v.reject("capacityReservationId", SETTINGS["capacityReservationId"].kind.allowed)


def confirm_only_with_purchase(v: Values) -> None:
    if v["capacityPurchaseConfirm"] and not v["capacityPurchase"]:
        v.reject("capacityPurchaseConfirm", "false unless capacityPurchase is true")


def purchase_fits_one_block(v: Values) -> None:
    spec, count = v[INSTANCE], v["instanceCount"]
    if not v["capacityPurchase"] or count <= MAX_INSTANCES_PER_BLOCK:
        return
    size = spec.instances_per_ultraserver
    most = f"{MAX_INSTANCES_PER_BLOCK} instances"
    if size > 1:
        ultraservers = MAX_INSTANCES_PER_BLOCK // size
        most = f"{ultraservers * size} instances ({ultraservers} x {spec.ultraserver_type})"
    v.reject(
        "instanceCount",
        f"at most {most} with capacityPurchase=true: EC2 sells at most {MAX_INSTANCES_PER_BLOCK} instances per "
        "Capacity Block (and 256 across an account's blocks)",
    )


def purchase_duration(v: Values) -> None:
    key = "capacityPurchaseDurationHours"
    if v["capacityPurchase"] and not valid_duration_hours(v[key]):
        v.reject(key, SETTINGS[key].allowed_text)


def purchase_time_given(key: str, v: Values) -> None:
    if v["capacityPurchase"] and v[key] is None:
        v.reject(key, UtcTime.allowed)


def purchase_window_in_order(v: Values) -> None:
    earliest, latest = (v[key] for key in PURCHASE_WINDOW)
    if v["capacityPurchase"] and latest < earliest:
        v.reject(
            "capacityPurchaseLatestStart",
            f"a time not before capacityPurchaseEarliestStart ({format_time(earliest)})",
        )


def purchase_starts_within_reach(key: str, v: Values) -> None:
    # Only the future bound is checked here: a window in the past stays valid, so a stack whose
    # block was bought keeps synthesizing. The handler rejects an expired window before buying.
    horizon = v[NOW] + MAX_START_AHEAD
    if v["capacityPurchase"] and v[key] > horizon:
        v.reject(
            key,
            f"a time at most 8 weeks ahead, i.e. before {format_time(horizon)} (EC2 sells Capacity Blocks "
            "starting at most 8 weeks ahead)",
        )


def purchase_fee_given(v: Values) -> None:
    key = "capacityPurchaseMaxUpfrontFeeUsd"
    if v["capacityPurchase"] and not v[key]:
        v.reject(key, SETTINGS[key].allowed_text)


def _zone_problem(key: str, region: str, zone: str) -> str | None:
    """What ``key`` allows if ``zone`` is not an Availability Zone of ``region``."""
    letters = REGION_AZ_LETTERS.get(region)
    zone_region = zone[:-1]
    if zone_region == region and zone[-1] in (letters or string.ascii_lowercase):
        return None
    if letters:
        allowed = "one of " + ", ".join(region + letter for letter in letters)
    else:
        allowed = f"an Availability Zone name of {region} ({region} followed by one letter)"
    if zone_region != region:
        allowed += f"; {zone} is in {zone_region}, not in region {region}: {key} must change with region"
    return allowed


def zone_in_region(v: Values) -> None:
    key = "availabilityZone"
    allowed = _zone_problem(key, v["region"], v[key])
    if allowed:
        v.reject(key, allowed)


def second_zone(v: Values) -> None:
    """EKS needs subnets in two zones; the second one carries no Trainium capacity."""
    key = "secondaryAvailabilityZone"
    region, zone, second = v["region"], v["availabilityZone"], v[key]
    if not second:
        second = next((region + x for x in REGION_AZ_LETTERS.get(region, "") if region + x != zone), "")
        if second:
            v.derive(key, second)
        else:
            v.reject(key, f"an Availability Zone of {region} other than {zone} (the kit knows no zones of {region} "
                          "to choose one from)")
    elif allowed := _zone_problem(key, region, second):
        v.reject(key, allowed)
    elif second == zone:
        v.reject(key, f"an AZ of {region} other than {zone}")


def subnet_with_vpc(key: str, zone_key: str, v: Values) -> None:
    vpc, subnet = v["vpcId"], v[key]
    if vpc and not subnet:
        v.reject(key, f"a subnet id subnet-... in {v[zone_key]} (required with vpcId)")
    elif subnet and not vpc:
        v.reject(key, "empty unless vpcId is set")


def metadata_iops_with_mode(v: Values) -> None:
    key, iops = "fsxMetadataIops", v["fsxMetadataIops"]
    if v["fsxMetadataMode"] == "USER_PROVISIONED":
        if not (iops in FSX_METADATA_IOPS_STEPS or (0 < iops <= FSX_METADATA_IOPS_MAX and iops % 12000 == 0)):
            v.reject(
                key,
                f"{', '.join(map(str, FSX_METADATA_IOPS_STEPS))}, or a multiple of 12000 up to "
                f"{FSX_METADATA_IOPS_MAX} (with fsxMetadataMode=USER_PROVISIONED)",
            )
    elif iops:
        v.reject(key, "0 unless fsxMetadataMode is USER_PROVISIONED")


def slurm_log_retention(v: Values) -> None:
    if v["orchestrator"] == "slurm" and v["logRetentionDays"] not in SLURM_LOG_RETENTION_DAYS:
        v.reject(
            "logRetentionDays", ", ".join(map(str, SLURM_LOG_RETENTION_DAYS)) + " (ParallelCluster's choices)"
        )


def slurm_tag_keys(v: Values) -> None:
    if v["orchestrator"] == "slurm":
        for key in v["tags"]:
            if key.startswith(PCLUSTER_TAG_PREFIX):
                v.reject("tags", f"tag keys not starting with {PCLUSTER_TAG_PREFIX} on slurm (ParallelCluster "
                                 "reserves the prefix)", value=key)


def tag_count(v: Values) -> None:
    count = len(v["tags"])
    limits = [(MAX_TAGS_PER_RESOURCE, "AWS's limit per resource")]
    if v["capacityPurchase"]:
        limits.append((MAX_TAGS_PER_RESOURCE - KIT_TAG_COUNT, f"a bought block carries {KIT_TAG_COUNT} of the "
                                                              "kit's own"))
    if v["orchestrator"] == "slurm":
        limits.append((PCLUSTER_MAX_TAGS, "ParallelCluster's limit on slurm"))
    most, why = min(limits)
    if count > most:
        v.reject("tags", f"at most {most} tags ({why})", value=count)


def dtype_on_instance(v: Values) -> None:
    dtypes = v[INSTANCE].core.supported_dtypes
    if v["burnInDtype"] not in dtypes:
        v.reject("burnInDtype", " or ".join(dtypes))


def healthy_unit_on_instance(v: Values) -> None:
    if v["burnInHealthyUnit"] == "ultraserver" and not v[INSTANCE].is_ultraserver:
        v.reject("burnInHealthyUnit", "node")


def handover_budget(v: Values) -> None:
    """Every node's first report and the cluster test must fit the handover (constructs/timeline.py)."""
    orchestrator, cluster_test = v["orchestrator"], v["clusterTest"]
    duration, timeout = v["burnInDurationSeconds"], v["burnInTimeoutMinutes"]
    image = "kit" if v["imageSsmParameter"] else "default"
    budgets = Budgets(orchestrator, image, duration)
    needed = budgets.first_pass_minutes(cluster_test)
    if needed <= timeout:
        return
    longest = budgets.longest_duration_seconds(timeout, cluster_test)
    test = f" and {budgets.cluster_test_minutes} for the cluster test" if cluster_test else ""
    if longest < MIN_BURN_IN_SECONDS:
        least = math.ceil(Budgets(orchestrator, image, MIN_BURN_IN_SECONDS).first_pass_minutes(cluster_test))
        v.reject(
            "burnInTimeoutMinutes",
            f"at least {least} on {orchestrator} with the {image} image, even with burnInDurationSeconds at its "
            f"least ({MIN_BURN_IN_SECONDS}): a node needs about {budgets.setup_minutes:.0f} minutes to boot and "
            f"set up before its burn-in (x{SAFETY:g} margin){test}",
        )
    else:
        v.reject(
            "burnInDurationSeconds",
            f"at most {longest} with burnInTimeoutMinutes={timeout} on {orchestrator} with the {image} image: a "
            f"node needs about {budgets.node_minutes:.0f} minutes from launch to its report (x{SAFETY:g} "
            f"margin){test}, {needed:.0f} minutes in all (raise burnInTimeoutMinutes, at most "
            f"{HANDOVER_MAX_MINUTES}, or shorten burnInDurationSeconds)",
        )


RULES: tuple[Callable[[Values], None], ...] = (
    instance_in_catalog,
    count_fills_ultraservers,
    reservation_or_purchase,
    confirm_only_with_purchase,
    purchase_fits_one_block,
    purchase_duration,
    *(partial(purchase_time_given, key) for key in PURCHASE_WINDOW),
    purchase_window_in_order,
    *(partial(purchase_starts_within_reach, key) for key in PURCHASE_WINDOW),
    purchase_fee_given,
    zone_in_region,
    second_zone,
    partial(subnet_with_vpc, "computeSubnetId", "availabilityZone"),
    partial(subnet_with_vpc, "secondarySubnetId", "secondaryAvailabilityZone"),
    metadata_iops_with_mode,
    slurm_log_retention,
    slurm_tag_keys,
    tag_count,
    dtype_on_instance,
    healthy_unit_on_instance,
    handover_budget,
)


def check(values: Values, now: datetime) -> None:
    """Run every rule over ``values``, which collects each rejection as a line."""
    values.derive(NOW, now)
    for rule in RULES:
        try:
            rule(values)
        except Skip:
            pass
