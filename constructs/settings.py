"""Every setting of the kit, declared once: its key, the default the kit ships (cdk.json carries the
same), the kind of value it takes, what is allowed and what it does. Reading the context, its
defaults and the README's configuration table all come from this table; the rules between settings
are trn_constructs.setting_rules', the typed configuration trn_constructs.config's.

``python -m trn_constructs.settings README.md`` rewrites the README's table from this one.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from aws_cdk.aws_logs import RetentionDays

from trn_burnin.catalog import CATALOG
from trn_burnin.thresholds import DEFAULT_MIN_MEDIAN_FRACTION, DEFAULT_MIN_PEAK_FRACTION
# The purchase handler's own limits, so that the table says what the deployment accepts.
from trn_constructs.capacity_purchase.handler.capacity_block.request import MAX_INSTANCES_PER_BLOCK
from trn_constructs.setting_kinds import (
    GIVEN, Amount, Boolean, CatalogOverrides, Choice, Cidr, Fraction, Integer, Invalid, Kind, Tags, Text,
    UtcTime, between, cidr_list, one_of, text_list,
)
from trn_constructs.timeline import BURN_IN_WARMUP_SECONDS

ORCHESTRATORS = ("eks", "slurm")
FSX_METADATA_MODES = ("AUTOMATIC", "USER_PROVISIONED")
# 1.34 is the first release the Neuron DRA driver and UltraServer operator support.
EKS_KUBERNETES_VERSIONS = ("1.34", "1.35")
MIN_BURN_IN_SECONDS = 30
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

_ROLE_ARN = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+"
_INSTANCE_TYPE = r"[a-z][a-z0-9-]*\.[a-z0-9]+"
_ZONE = r"[a-z]{2}(-gov)?-[a-z]+-\d[a-z]"
_SUBNET_ID = r"subnet-[0-9a-f]{8}([0-9a-f]{9})?"
_ABSOLUTE_PATH = r"/[A-Za-z0-9._/-]*"
_CATALOG_TYPES = ", ".join(spec.instance_type for spec in CATALOG.values())
_DTYPES = tuple(dict.fromkeys(dtype for spec in CATALOG.values() for dtype in spec.core.supported_dtypes))


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any  # what the kit ships; cdk.json carries the same
    kind: Kind  # parses a value on its own, knowing no other setting
    description: str
    # What is allowed, where it says more than the kind (which knows no other setting).
    allowed: str = ""
    example: bool = False  # the default is an example: replace it with yours

    @property
    def allowed_text(self) -> str:
        return self.allowed or self.kind.allowed


_TABLE = (
    Setting("account", "123456789012", Text("a 12-digit AWS account id", r"\d{12}"),
            "The AWS account the stacks deploy to.", example=True),
    Setting("region", "us-east-2", Text("an AWS region name such as us-east-2", r"[a-z]{2}(-gov)?-[a-z]+-\d"),
            "The region of your Capacity Block; availabilityZone changes with it.", example=True),
    Setting("orchestrator", "slurm", Choice(ORCHESTRATORS),
            "slurm: AWS ParallelCluster; eks: Amazon EKS with a Trainium node group."),
    Setting("instanceType", "trn3.48xlarge", Text(_CATALOG_TYPES),
            "Your block's instance type, an entry of the hardware catalog (below).",
            allowed=f"an instance type of the hardware catalog: {_CATALOG_TYPES}"),
    Setting("instanceCount", 4, Integer(), "Instances in your block; every one is burned in.",
            allowed="a whole number >= 1: for UltraServer types a multiple of the UltraServer size; at most "
                    f"{MAX_INSTANCES_PER_BLOCK} with capacityPurchase"),
    Setting("capacityReservationId", "cr-0123456789abcdef0",
            Text("a Capacity Block reservation id: 'cr-' followed by 17 lowercase hex digits (or "
                 "capacityPurchase=true to have the kit buy a block)", r"(cr-[0-9a-f]{17})?"),
            "Your Capacity Block, which the cluster's Trainium nodes run in.",
            allowed="'cr-' followed by 17 lowercase hex digits; empty with capacityPurchase", example=True),
    Setting("capacityPurchase", False, Boolean(),
            "true: the kit finds (and, confirmed, buys) a block instead of capacityReservationId; see "
            "[Buying a Capacity Block](#buying-a-capacity-block)."),
    Setting("capacityPurchaseDurationHours", 0, Integer(),
            "With capacityPurchase: the block's length in hours.",
            allowed="1-14 days in whole days (24-336, multiples of 24), or 7-day steps up to 182 days (multiples "
                    "of 168 up to 4368)"),
    Setting("capacityPurchaseEarliestStart", "", UtcTime(),
            "With capacityPurchase: the earliest start of the block to buy.",
            allowed="an ISO-8601 UTC time such as 2026-12-01T11:30:00Z, at most 8 weeks ahead"),
    Setting("capacityPurchaseLatestStart", "", UtcTime(),
            "With capacityPurchase: the latest start of the block to buy.",
            allowed="an ISO-8601 UTC time not before capacityPurchaseEarliestStart, at most 8 weeks ahead"),
    Setting("capacityPurchaseMaxUpfrontFeeUsd", 0,
            Amount("a positive amount of US dollars such as 25000, the most the kit may pay for the block "
                   "(required with capacityPurchase=true)"),
            "The most the kit may pay for the block; nothing above it is bought."),
    Setting("capacityPurchaseConfirm", False, Boolean(),
            "true buys; without it a purchase is a dry run that reports the offering it would buy.",
            allowed="true or false; true only with capacityPurchase"),
    Setting("capacityEndNoticeHours", 12, between(1, 168),
            "Hours before the block ends that the alert topic gets a notice."),
    Setting("alertEmail", "",
            Text("empty (no e-mail) or one e-mail address such as ml-team@example.com", r"([^@\s]+@[^@\s]+\.[^@\s]+)?"),
            "Subscribed to the alert topic (confirm AWS's e-mail)."),
    Setting("availabilityZone", "us-east-2b", Text("an Availability Zone name such as us-east-2b", _ZONE),
            "Your block's Availability Zone; it hosts the NAT gateway and every endpoint.",
            allowed="an Availability Zone of region", example=True),
    Setting("secondaryAvailabilityZone", "",
            Text("empty or an Availability Zone name such as us-east-2a", f"({_ZONE})?"),
            "The second zone EKS and the kit's VPC need; it carries no Trainium capacity.",
            allowed="empty (the first other zone of region, where the kit knows its zones) or another zone "
                    "of region"),
    Setting("vpcCidr", "10.0.0.0/16", Cidr(), "The VPC's block, when the kit builds the VPC."),
    Setting("vpcId", "", Text("empty (build a VPC) or a VPC id vpc-...", r"(vpc-[0-9a-f]{8}([0-9a-f]{9})?)?"),
            "An existing VPC to import instead; it must provide egress and endpoints."),
    Setting("computeSubnetId", "", Text("empty, or with vpcId a subnet id subnet-...", f"({_SUBNET_ID})?"),
            "With vpcId: the private subnet of the Trainium nodes.",
            allowed="with vpcId a subnet id subnet-... in availabilityZone, else empty"),
    Setting("secondarySubnetId", "", Text("empty, or with vpcId a subnet id subnet-...", f"({_SUBNET_ID})?"),
            "With vpcId: a private subnet in the second zone.",
            allowed="with vpcId a subnet id subnet-... in secondaryAvailabilityZone, else empty"),
    Setting("fsxStorageCapacityGiB", 1200,
            Integer("1200, 2400, or a multiple of 2400", lambda n: n in (1200, 2400) or (n > 0 and n % 2400 == 0)),
            "The FSx for Lustre file system's size."),
    Setting("fsxThroughputMBpsPerTiB", 250, one_of((125, 250, 500, 1000)), "The file system's throughput per TiB."),
    Setting("fsxMetadataMode", "AUTOMATIC", Choice(FSX_METADATA_MODES), "How the file system's metadata IOPS are set."),
    Setting("fsxMetadataIops", 0, Integer(), "With USER_PROVISIONED: the metadata IOPS.",
            allowed="0, or with USER_PROVISIONED 1500, 3000, 6000, 12000, or a multiple of 12000 up to 192000"),
    Setting("fsxEfaEnabled", False, Boolean(), "An EFA-enabled file system (set at creation only)."),
    Setting("fsxS3Path", "",
            Text("empty (no S3 link) or an S3 URI s3://bucket[/prefix]", r"(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?)?"),
            "Links the file system to S3 (automatic import and export)."),
    Setting("fsxS3FileSystemPath", "/s3", Text("an absolute path inside the file system such as /s3", _ABSOLUTE_PATH),
            "Where the S3 link appears inside the file system."),
    Setting("fsxRemovalPolicy", "retain", Choice(("retain", "destroy")),
            "retain keeps the file system (and what it needs) when the stack is destroyed."),
    Setting("fsxMountDir", "/fsx", Text("an absolute path such as /fsx", _ABSOLUTE_PATH),
            "Where nodes mount the file system."),
    Setting("logRetentionDays", 90, one_of(tuple(LOG_RETENTION)), "How long the kit's log groups keep events.",
            allowed="a CloudWatch Logs retention period in days; on slurm one that ParallelCluster accepts"),
    Setting("catalogOverrides", {}, CatalogOverrides(),
            "Corrects the catalog's UNCERTAIN Trainium3 names and figures (see below); each instance type stays "
            "one entry's."),
    Setting("tags", {"project": "trn-cluster"}, Tags(), "Tags for every resource.",
            allowed="an object of string tag values by AWS's tag rules (no aws: prefix, keys 1-128 and values "
                    "0-256 characters)"),
    Setting("imageSsmParameter", "",
            Text("empty (slurm: ParallelCluster's image, Neuron installed at node start; eks: the EKS Neuron AMI) or "
                 "an SSM parameter name such as /trn-kit/ami/slurm or /trn-kit/ami/eks", r"(/[A-Za-z0-9_.-]+)*"),
            "An SSM parameter holding your Trainium node image id, read at deploy time, e.g. from TrnAmiStack "
            "(see [Your own image](#your-own-image-ami))."),
    Setting("burnInDtype", "bf16", Choice(_DTYPES), "The data type the burn-in's matrix multiplications use.",
            allowed="a data type the instance's NeuronCores support: bf16, fp8, fp32; mxfp8 on Trainium3"),
    Setting("burnInDurationSeconds", 180, between(MIN_BURN_IN_SECONDS, 3600),
            f"Measured seconds per core, after a {BURN_IN_WARMUP_SECONDS} s warm-up (the kernel is compiled once per "
            "node before either).",
            allowed=f"a whole number {MIN_BURN_IN_SECONDS}-3600 that fits burnInTimeoutMinutes"),
    Setting("burnInTimeoutMinutes", 55, between(30, 55),
            "The whole handover, from its start to the verdict, cluster test included (CloudFormation waits at most "
            "an hour)."),
    Setting("burnInMinHealthyFraction", 1.0, Fraction(), "The share of nodes that must pass for the handover."),
    Setting("burnInHealthyUnit", "node", Choice(("node", "ultraserver")),
            "node: the share counts passed nodes; ultraserver: only nodes of UltraServers whose every node passed.",
            allowed="node, or ultraserver for UltraServer types"),
    Setting("burnInReplaceFailedNodes", True, Boolean(),
            "A failed node's instance is terminated and the orchestrator relaunches into its slot."),
    Setting("burnInMaxReplacements", 1, between(0, 3),
            "Replacements per slot, each only while it can still finish in the handover's time."),
    Setting("burnInMinPeakFraction", DEFAULT_MIN_PEAK_FRACTION, Fraction(),
            "Each core must reach this share of the catalog's per-core peak for burnInDtype (not yet calibrated "
            "on Trainium)."),
    Setting("burnInMinMedianFraction", DEFAULT_MIN_MEDIAN_FRACTION, Fraction(),
            "Each core must reach this share of its node's median core."),
    Setting("clusterTest", True, Boolean(),
            "The handover's second stage: an nccom-test all-reduce across the passed nodes (2+ nodes)."),
    Setting("clusterTestMinBusBandwidthFraction", 0.25, Fraction(),
            "The all-reduce's bus bandwidth floor, as a share of the catalog's EFA line rate per instance."),
    Setting("eksKubernetesVersion", "1.34", Choice(EKS_KUBERNETES_VERSIONS), "The EKS cluster's Kubernetes version."),
    Setting("eksAdminRoleArn", "",
            Text("empty or an IAM role ARN arn:aws:iam::<account>:role/<name>", f"({_ROLE_ARN})?"),
            "A role given cluster-admin access."),
    Setting("eksPublicAccessCidrs", [],
            cidr_list("a list of IPv4 CIDR blocks allowed to reach the public API endpoint (empty: private "
                      "endpoint only)"),
            "Who may reach a public Kubernetes API endpoint."),
    Setting("eksSystemNodeInstanceType", "m7i.xlarge", Text("an EC2 instance type such as m7i.xlarge", _INSTANCE_TYPE),
            "The non-Trainium node group for add-ons."),
    Setting("eksSystemNodeCount", 2, between(1, 10), "Nodes of the add-on node group."),
    Setting("slurmHeadNodeInstanceType", "m7i.2xlarge",
            Text("an EC2 instance type such as m7i.2xlarge", _INSTANCE_TYPE), "The ParallelCluster head node's type."),
    Setting("slurmAdditionalPolicyArns", [],
            text_list("a list of IAM policy ARNs", r"arn:aws[a-z-]*:iam::(aws|\d{12}):policy/[\w+=,.@/-]+"),
            "IAM policies attached to head and compute nodes."),
    Setting("slurmProviderLambdaRoleArn", "", Text("empty or an IAM role ARN", f"({_ROLE_ARN})?"),
            "A role for ParallelCluster's provider functions."),
)  # fmt: skip
SETTINGS: Mapping[str, Setting] = {setting.key: setting for setting in _TABLE}

# Keys of the CDK's own in context: feature flags ('@aws-cdk/...'), keys carrying ':' or '/' (lookups,
# 'aws:cdk:...'), and those the CDK CLI (2.1148) writes into cdk.context.json: `cdk acknowledge` and
# `cdk cli-telemetry`.
CDK_CLI_KEYS = frozenset({"acknowledged-issue-numbers", "cli-telemetry"})


def is_cdk_key(key: str) -> bool:
    return key.startswith("@") or ":" in key or "/" in key or key in CDK_CLI_KEYS


def _folded(key: str) -> str:
    return re.sub(r"[-_\s]", "", key).lower()


def meant(key: str) -> str | None:
    """The setting an unknown key most likely means: the same name in another spelling
    (InstanceType, instance_type, instance-type), else a near miss (instanceTyep)."""
    folded = {_folded(name): name for name in SETTINGS}
    close = difflib.get_close_matches(_folded(key), folded, n=1, cutoff=0.8)
    return folded[close[0]] if close else None


class Skip(Exception):
    """A rule read a setting that failed: the rule is skipped, so one mistake makes one line."""


class Values:
    """The settings' values as parsed, what rules derived from them, and one line per problem.

    Reading a setting that failed (or a derived value never derived) raises Skip.
    """

    def __init__(self) -> None:
        self._typed: dict[str, Any] = {}
        self._given: dict[str, Any] = {}
        self._failed: set[str] = set()
        self.lines: list[str] = []

    def __getitem__(self, key: str) -> Any:
        if key in self._failed or key not in self._typed:
            raise Skip(key)
        return self._typed[key]

    def derive(self, key: str, value: Any) -> None:
        self._typed[key] = value

    def reject(self, key: str, allowed: str, value: Any = GIVEN, part: str = "") -> None:
        shown = self._given.get(key) if value is GIVEN else value
        self.lines.append(f"setting '{key}{part}': got {shown!r}; allowed: {allowed}")
        self._failed.add(key)

    def read(self, setting: Setting, given: Any) -> None:
        self._given[setting.key] = given.strip() if isinstance(given, str) else given
        try:
            self._typed[setting.key] = setting.kind.parse(given)
        except Invalid as invalid:
            for problem in invalid.problems:
                self.reject(setting.key, problem.allowed, problem.value, problem.part)

    def unknown(self, key: str) -> None:
        """A key that is no setting; the setting it likely means counts as failed, so that rules do
        not judge that setting's default, which the user meant to replace."""
        near = meant(key)
        if near:
            self.lines.append(f"setting '{key}' is not a setting of this kit; did you mean '{near}'?")
            self._failed.add(near)
        else:
            self.lines.append(
                f"setting '{key}' is not a setting of this kit; known settings: {', '.join(SETTINGS)}"
            )


def read_settings(raw: Mapping[str, Any]) -> Values:
    """Every setting from raw context (cdk.json and -c), each parsed on its own; unknown keys in
    any spelling are problems too."""
    values = Values()
    for key in raw:
        if key not in SETTINGS and not is_cdk_key(key):
            values.unknown(key)
    for setting in SETTINGS.values():
        given = raw.get(setting.key)
        values.read(setting, copy.deepcopy(setting.default) if given is None else given)
    return values


README_START = (
    "<!-- settings table: generated from constructs/settings.py by "
    "`.venv/bin/python -m trn_constructs.settings README.md`; edit the table there -->"
)
README_END = "<!-- end of settings table -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def _default_cell(setting: Setting) -> str:
    value = setting.default
    shown = "empty" if value == "" else f"`{value if isinstance(value, str) else json.dumps(value)}`"
    return f"{shown} (example: use yours)" if setting.example else shown


def markdown_table() -> str:
    rows = ["| setting | default | allowed | what it does |", "|---|---|---|---|"]
    rows += [
        f"| `{s.key}` | {_cell(_default_cell(s))} | {_cell(s.allowed_text)} | {_cell(s.description)} |"
        for s in SETTINGS.values()
    ]
    return "\n".join(rows)


def with_table(readme: str) -> str:
    """``readme`` with the text between its settings-table markers replaced by the table."""
    before, start, rest = readme.partition(README_START)
    _, end, after = rest.partition(README_END)
    if not (start and end):
        raise ValueError(f"the README has no settings-table markers: {README_START} ... {README_END}")
    return f"{before}{start}\n\n{markdown_table()}\n\n{end}{after}"


if __name__ == "__main__":
    readme = Path(sys.argv[1])
    readme.write_text(with_table(readme.read_text()))
