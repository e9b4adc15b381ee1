"""The burn-in as every Trainium node gets it: the packaged ``trn_burnin``, the bootstrap that
starts it, the reports bucket and exactly the permissions a node needs. How a node runs it is its
orchestrator's (trn_constructs.slurm, trn_constructs.eks); judging the reports is the handover's
(trn_constructs.handover)."""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct, IConstruct

from trn_burnin.publish import DEFAULT_NAMESPACE
from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import BurnInConfig
from trn_constructs.evidence_bucket import evidence_bucket
from trn_constructs.findings import acknowledge, arn_finding

HERE = Path(__file__).resolve().parent
BURN_IN_PACKAGE_DIR = HERE.parent.parent / "trn_burnin"
BOOTSTRAP_SCRIPT = HERE / "node" / "trn_burnin_bootstrap.py"
REPORTS_PREFIX = "burn-in/"
CLUSTER_TEST_PREFIX = "cluster-test/"
HANDOVER_PREFIX = "handover/"  # the handover's ledger and verdicts
# Written by the bootstrap on every node: runs the unpacked trn_burnin with the Neuron interpreter.
NODE_LAUNCHER = "/opt/trn-kit/bin/trn-burnin"
# Where the handover's command on the Slurm head node puts the bootstrap, fresh for every run.
HEAD_NODE_BOOTSTRAP = "/opt/trn-kit/trn_burnin_bootstrap.py"


class BurnInArtifacts(Construct):
    """What a node needs to run the burn-in and report.

    Attributes:
        package: the zipped ``trn_burnin`` package (a CDK asset, versioned with the stack).
        bootstrap: the bootstrap script (a CDK asset), for orchestrators that fetch scripts by URI.
        bucket, reports_prefix: where every node writes its report.
        reports: the bucket with its key (readers and writers need both) and access-log bucket.
        cluster_name: the ClusterName dimension of the nodes' burn-in metrics.
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster_name: str) -> None:
        super().__init__(scope, construct_id)
        self.cluster_name = cluster_name
        self.package = s3_assets.Asset(
            self, "Package", path=str(BURN_IN_PACKAGE_DIR), exclude=["__pycache__", "*.pyc"]
        )
        self.bootstrap = s3_assets.Asset(self, "Bootstrap", path=str(BOOTSTRAP_SCRIPT))
        # Reports are the evidence of what each chip did at handover; kept, with who wrote them.
        self.reports = evidence_bucket(
            self, "Reports", description="the burn-in reports, cluster tests and handover verdicts"
        )
        self.bucket = self.reports.bucket
        self.reports_prefix = REPORTS_PREFIX
        self.cluster_test_prefix = CLUSTER_TEST_PREFIX

    @property
    def reports_uri(self) -> str:
        return f"s3://{self.bucket.bucket_name}/{self.reports_prefix}"

    def _read_package_and_bootstrap(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            actions=["s3:GetObject"],
            resources=[asset.bucket.arn_for_objects(asset.s3_object_key) for asset in (self.package, self.bootstrap)],
        )

    def node_statements(self) -> list[iam.PolicyStatement]:
        """Read the package and bootstrap, write reports, publish burn-in metrics; nothing more."""
        return [
            self._read_package_and_bootstrap(),
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects(f"{self.reports_prefix}*")],
            ),
            *self.reports.key_statements(write=True),
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": DEFAULT_NAMESPACE}},
            ),
        ]

    def head_node_statements(self) -> list[iam.PolicyStatement]:
        """The Slurm head node, which runs the handover's cluster all-reduce: read the package and
        bootstrap, write the result under the cluster-test prefix; nothing more."""
        return [
            self._read_package_and_bootstrap(),
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects(f"{self.cluster_test_prefix}*")],
            ),
            *self.reports.key_statements(write=True),
        ]

    def acknowledge_head_node_policy(self, policy: IConstruct) -> None:
        acknowledge(
            policy,
            arn_finding(self.bucket, f"/{self.cluster_test_prefix}*"),
            "The head node writes the cluster all-reduce's result under a key the handover chooses per run",
        )

    def handover_policy(self) -> iam.ManagedPolicy:
        """What the handover may do in the bucket: read every report, keep its ledger and verdicts,
        and the cluster test's folders. Owned here, beside the bucket, for the handover's roles to
        attach."""
        prefixes = (self.reports_prefix, HANDOVER_PREFIX, self.cluster_test_prefix)
        policy = iam.ManagedPolicy(
            self,
            "HandoverAccess",
            description="The handover: read the burn-in reports, keep its ledger, verdicts and cluster tests",
            statements=[
                iam.PolicyStatement(
                    actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}},
                ),
                iam.PolicyStatement(
                    actions=["s3:GetObject"], resources=[self.bucket.arn_for_objects(f"{p}*") for p in prefixes]
                ),
                iam.PolicyStatement(
                    actions=["s3:PutObject"],
                    resources=[self.bucket.arn_for_objects(f"{p}*") for p in (HANDOVER_PREFIX, self.cluster_test_prefix)],
                ),
                *self.reports.key_statements(read=True, write=True),
            ],
        )  # fmt: skip
        for prefix in prefixes:
            acknowledge(
                policy,
                arn_finding(self.bucket, f"/{prefix}*"),
                "The handover reads every node's report, and keeps its ledger, verdicts and the cluster "
                "test's folders, under these prefixes; reports are named by instance and time",
            )
        return policy

    def cluster_test_folder_statements(self, object_actions: list[str]) -> list[iam.PolicyStatement]:
        """List the cluster-test prefix, and ``object_actions`` on the objects under it."""
        return [
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{self.cluster_test_prefix}*"]}},
            ),
            iam.PolicyStatement(
                actions=object_actions,
                resources=[self.bucket.arn_for_objects(f"{self.cluster_test_prefix}*")],
            ),
        ]

    def cluster_test_statements(self) -> list[iam.PolicyStatement]:
        """The cluster all-reduce's pods: read the package (their bootstrap comes in a
        ConfigMap); meet, and leave the result, under the cluster-test prefix; nothing more."""
        return [
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[self.package.bucket.arn_for_objects(self.package.s3_object_key)],
            ),
            *self.cluster_test_folder_statements(["s3:GetObject", "s3:PutObject"]),
            *self.reports.key_statements(read=True, write=True),
        ]

    def acknowledge_node_policy(self, policy: IConstruct) -> None:
        acknowledge(
            policy,
            arn_finding(self.bucket, f"/{self.reports_prefix}*"),
            "Each node writes one report per run under the reports prefix, named by instance id",
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "PutMetricData has no resource-level permissions; the condition limits it to the "
            "burn-in's metric namespace",
        )

    def node_arguments(
        self, capacity: CapacityTarget, burn_in: BurnInConfig, *, slurm: bool
    ) -> list[str]:
        """Bootstrap arguments: where things are, then the burn-in's own settings."""
        return [
            "--package", self.package.s3_object_url,
            "--reports", self.reports_uri,
            "--region", Stack.of(self).region,
            *(["--slurm"] if slurm else []),
            "--",
            *catalog_arguments(capacity),
            "--dtype", burn_in.dtype,
            "--duration", str(burn_in.duration_seconds),
            "--min-peak-fraction", str(burn_in.min_peak_fraction),
            "--min-median-fraction", str(burn_in.min_median_fraction),
            "--cluster-name", self.cluster_name,
        ]  # fmt: skip


def cluster_test_arguments(
    capacity: CapacityTarget, burn_in: BurnInConfig, region: str
) -> list[str]:
    """``trn_burnin cluster-test`` arguments both orchestrators share: what the nodes are and the
    bandwidth floor."""
    return [
        *catalog_arguments(capacity),
        "--min-bus-bandwidth-fraction", str(burn_in.cluster_test_min_bus_bandwidth_fraction),
        "--region", region,
    ]  # fmt: skip


def catalog_arguments(capacity: CapacityTarget) -> list[str]:
    """The node's instance type and the catalog overrides the stack used."""
    spec = capacity.instance
    # The node may carry an overridden (uncertain) instance type string or FP8 peak; hand it the
    # overrides, under cdk.json's names, so trn_burnin uses the same catalog entry the stack used.
    overrides = {spec.key: spec.overridable_values()}
    return [
        "--instance-type", spec.instance_type,
        "--catalog-overrides", json.dumps(overrides, separators=(",", ":")),
    ]  # fmt: skip
