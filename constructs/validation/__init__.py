"""Validation: deliver the burn-in to every Trainium node and gate the handover on its reports.

``BurnInArtifacts`` holds what nodes need (the packaged ``trn_burnin``, a bootstrap script, a
reports bucket, the exact permissions); ``HandoverGate`` is the custom resource that makes the
deploy wait for every node's report and fail with the failed nodes named, then wait for the
cluster-level all-reduce across the passed nodes: on Slurm it submits that job itself; on EKS the
stack applies a Job sized by the gate's first stage and a second gate resource waits for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import CustomResource, Duration, Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct, IConstruct

from trn_burnin.catalog import OVERRIDABLE_FIELDS
from trn_burnin.publish import DEFAULT_NAMESPACE
from trn_burnin.rendezvous import HOSTS_DIR, LAUNCHER_KEY_NAME, RESULT_NAME
from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import BurnInConfig
from trn_constructs.evidence_bucket import evidence_bucket
from trn_constructs.findings import acknowledge, arn_finding
from trn_constructs.handlers import handler_code, handler_function, provider

HERE = Path(__file__).resolve().parent
BURN_IN_PACKAGE_DIR = HERE.parent.parent / "trn_burnin"
BOOTSTRAP_SCRIPT = HERE / "node" / "trn_burnin_bootstrap.py"
REPORTS_PREFIX = "burn-in/"
CLUSTER_TEST_PREFIX = "cluster-test/"
# Written by the bootstrap on every node: runs the unpacked trn_burnin with the Neuron interpreter.
NODE_LAUNCHER = "/opt/trn-kit/bin/trn-burnin"
# Stage 1 ends this long before the gate's deadline so the cluster all-reduce always has it:
# Slurm scheduling, NEFF generation and three message sizes take a few minutes.
CLUSTER_TEST_RESERVE = Duration.minutes(10)
CLUSTER_TEST_JOB_MINUTES = 8
# EKS: the Job's pods first pull the Neuron training image (several GB), then meet through S3
# (trn_burnin.rendezvous waits up to 10 minutes) before the same 6-minute nccom-test.
CLUSTER_TEST_POD_WAIT = Duration.minutes(25)
# Custom resource waits are capped by CloudFormation at one hour; keep the gate's own deadline
# inside that so its message ("no report from i-...") wins over a generic timeout.
GATE_MARGIN = Duration.minutes(4)
CLOUDFORMATION_MAX_WAIT_SECONDS = 3600
GATE_POLL_INTERVAL = Duration.minutes(1)


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
            self, "Reports", description="the burn-in reports and cluster test results"
        )
        self.bucket = self.reports.bucket
        self.reports_prefix = REPORTS_PREFIX
        self.cluster_test_prefix = CLUSTER_TEST_PREFIX

    @property
    def reports_uri(self) -> str:
        return f"s3://{self.bucket.bucket_name}/{self.reports_prefix}"

    def node_statements(self, *, cluster_test: bool) -> list[iam.PolicyStatement]:
        """Read the package and bootstrap, write reports (and the cluster test's result), publish
        burn-in metrics; nothing more."""
        written = (self.reports_prefix, *([self.cluster_test_prefix] if cluster_test else []))
        return [
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    asset.bucket.arn_for_objects(asset.s3_object_key)
                    for asset in (self.package, self.bootstrap)
                ],
            ),
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects(f"{prefix}*") for prefix in written],
            ),
            *self.reports.key_statements(write=True),
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": DEFAULT_NAMESPACE}},
            ),
        ]

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

    def acknowledge_node_policy(self, policy: IConstruct, *, cluster_test: bool) -> None:
        acknowledge(
            policy,
            arn_finding(self.bucket, f"/{self.reports_prefix}*"),
            "Each node writes one report per run under the reports prefix, named by instance id",
        )
        if cluster_test:
            acknowledge(
                policy,
                arn_finding(self.bucket, f"/{self.cluster_test_prefix}*"),
                "The first node of the cluster all-reduce writes its result under a key the gate "
                "chooses per deployment request",
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
    # The node may carry an overridden (uncertain) instance type string; hand it the overrides
    # so trn_burnin finds the same catalog entry the stack used.
    overrides = {spec.key: {field: getattr(spec, field) for field in OVERRIDABLE_FIELDS}}
    return [
        "--instance-type", spec.instance_type,
        "--catalog-overrides", json.dumps(overrides, separators=(",", ":")),
    ]  # fmt: skip


@dataclass(frozen=True)
class SlurmClusterTest:
    """Where the gate submits the cluster all-reduce: the head node and the Trainium partition."""

    head_node_instance_id: str
    partition: str


@dataclass(frozen=True)
class ClusterTestHandover:
    """What the gate's first stage hands to a cluster test that follows it (deploy-time values)."""

    passed_nodes: str  # how many pods to run: one per node that passed
    run_id: str  # names the Job and its S3 folder, new for each deployment request
    not_after: str  # UTC time by which the pods must be done (their Job's deadline, at the latest)


@dataclass(frozen=True)
class ClusterTestJob:
    """A cluster all-reduce the stack started (an EKS Job): what the gate waits for."""

    resource: IConstruct  # applies the Job; the gate's second stage waits for it
    run_prefix: str  # in the reports bucket: the rendezvous folder and result of this run
    job_name: str
    namespace: str


def allow_cluster_test_folder(
    is_complete: lambda_.IFunction, artifacts: BurnInArtifacts, actions: list[str], reason: str
) -> None:
    for statement in artifacts.cluster_test_folder_statements(actions):
        is_complete.add_to_role_policy(statement)
    acknowledge(is_complete, arn_finding(artifacts.bucket, f"/{artifacts.cluster_test_prefix}*"), reason)


class HandoverGate(Construct):
    """Completes only when every Trainium node has passed the burn-in (per minHealthyFraction).

    It depends on whatever brings the nodes up, so it starts waiting once they exist; it reads S3
    and EC2 and never changes, deletes or buys anything. With ``cluster_test`` it then submits
    one Slurm job (SSM Run Command on the head node) that runs the nccom-test all-reduce across
    the passed nodes, and waits for its verdict. With ``cluster_test_follows`` (the fingerprint
    of what runs the all-reduce; a change runs this stage again, naming a new run) it hands the
    number of passed nodes, a run id and a deadline to it (``handover``), and
    ``wait_for_cluster_test`` adds the second resource that waits for it.

    Attributes:
        summary: one line, e.g. "4/4 nodes passed the burn-in (policy 100%); median chip
            throughput 91.2% of peak. Cluster all-reduce across 4 nodes: ...".
        report_location: s3:// prefix of the node reports.
        handover: deploy-time values of the first stage, for a cluster test that follows it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        artifacts: BurnInArtifacts,
        capacity: CapacityTarget,
        burn_in: BurnInConfig,
        nodes: IConstruct,
        log_retention: logs.RetentionDays,
        cluster_test: SlurmClusterTest | None = None,
        cluster_test_follows: str | None = None,
        cluster_test_skipped: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._artifacts = artifacts
        code = handler_code(HERE / "handler")
        on_event, is_complete = (
            handler_function(
                self,
                construct_id,
                code=code,
                entry_point=entry_point,
                timeout=timeout,
                description=f"Burn-in handover gate: {entry_point}",
                log_retention=log_retention,
            )
            for construct_id, entry_point, timeout in (
                ("OnEvent", "on_event", Duration.seconds(30)),
                ("IsComplete", "is_complete", Duration.minutes(2)),
            )
        )
        for statement in (
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[artifacts.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{artifacts.reports_prefix}*"]}},
            ),
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[artifacts.bucket.arn_for_objects(f"{artifacts.reports_prefix}*")],
            ),
            iam.PolicyStatement(actions=["ec2:DescribeInstances"], resources=["*"]),
            # On Slurm it also writes the cluster test's submission marker.
            *artifacts.reports.key_statements(read=True, write=cluster_test is not None),
        ):
            is_complete.add_to_role_policy(statement)
        acknowledge(
            is_complete,
            arn_finding(artifacts.bucket, f"/{artifacts.reports_prefix}*"),
            "The gate reads every node's report under the reports prefix",
        )
        acknowledge(
            is_complete,
            "AwsSolutions-IAM5[Resource::*]",
            "ec2:DescribeInstances has no resource-level permissions; the gate only lists the "
            "instances of its Capacity Block"
            + (
                "; nor has ssm:GetCommandInvocation, with which it follows the one command it "
                "sent to the head node"
                if cluster_test
                else ""
            ),
        )
        if cluster_test:
            self._allow_cluster_test(is_complete, artifacts, cluster_test)
        elif cluster_test_follows:
            allow_cluster_test_folder(
                is_complete,
                artifacts,
                ["s3:GetObject"],
                "The gate's second stage lists the run's folder under the cluster-test prefix, "
                "one folder per deployment request, and reads the result the Job's first pod wrote",
            )
        wait = Duration.minutes(burn_in.timeout_minutes)
        self._provider = provider(
            self,
            "Provider",
            on_event_handler=on_event,
            is_complete_handler=is_complete,
            log_retention=log_retention,
            query_interval=GATE_POLL_INTERVAL,
            # Each resource keeps its own, shorter deadline (TimeoutSeconds).
            total_timeout=Duration.minutes(
                max(burn_in.timeout_minutes, CLUSTER_TEST_POD_WAIT.to_minutes())
            ).plus(GATE_MARGIN),
        )
        gate = self._wait(
            "Resource",
            wait,
            {
                "ReportsBucket": artifacts.bucket.bucket_name,
                "ReportsPrefix": artifacts.reports_prefix,
                "CapacityReservationId": capacity.reservation_id,
                "ExpectedNodes": str(capacity.instance_count),
                "MinHealthyFraction": str(burn_in.min_healthy_fraction),
                **self._stage_two_properties(
                    artifacts, capacity, burn_in, cluster_test, cluster_test_follows,
                    cluster_test_skipped,
                ),
            },
        )
        gate.node.add_dependency(nodes)
        self.summary = gate.get_att_string("Summary")
        self.report_location = gate.get_att_string("ReportLocation")
        self.handover = ClusterTestHandover(
            passed_nodes=gate.get_att_string("PassedNodes"),
            run_id=gate.get_att_string("RunId"),
            not_after=gate.get_att_string("ClusterTestNotAfter"),
        )

    def _wait(self, construct_id: str, wait: Duration, properties: dict) -> CustomResource:
        return CustomResource(
            self,
            construct_id,
            service_token=self._provider.service_token,
            resource_type="Custom::TrnBurnInGate",
            # Long enough for the Provider to report its own timeout, within CloudFormation's cap.
            service_timeout=Duration.seconds(
                min(
                    CLOUDFORMATION_MAX_WAIT_SECONDS,
                    wait.plus(GATE_MARGIN).plus(GATE_MARGIN).to_seconds(),
                )
            ),
            properties={**properties, "TimeoutSeconds": str(int(wait.to_seconds()))},
        )

    def wait_for_cluster_test(self, job: ClusterTestJob) -> None:
        """The second stage as its own resource: wait for the result ``job`` writes, after it is
        applied; the summary then ends with its verdict."""
        stage = self._wait(
            "ClusterTest",
            CLUSTER_TEST_POD_WAIT,
            {
                "Stage": "cluster-test",
                "ReportsBucket": self._artifacts.bucket.bucket_name,
                "RunPrefix": job.run_prefix,
                "ResultName": RESULT_NAME,
                "HostsDir": HOSTS_DIR,
                "LauncherKeyName": LAUNCHER_KEY_NAME,
                "Nodes": self.handover.passed_nodes,
                "JobName": job.job_name,
                "Namespace": job.namespace,
            },
        )
        stage.node.add_dependency(job.resource)
        self.summary = Fn.join(". ", [self.summary, stage.get_att_string("Summary")])

    def _stage_two_properties(
        self,
        artifacts: BurnInArtifacts,
        capacity: CapacityTarget,
        burn_in: BurnInConfig,
        cluster_test: SlurmClusterTest | None,
        follows: str | None,
        skipped: str | None,
    ) -> dict[str, object]:
        if cluster_test:
            return {"ClusterTest": self._cluster_test_properties(
                artifacts, capacity, burn_in, cluster_test
            )}  # fmt: skip
        if follows:
            return {"ClusterTestRunsNext": {
                "Fingerprint": follows,
                "Seconds": str(int(CLUSTER_TEST_POD_WAIT.to_seconds())),
            }}  # fmt: skip
        return {"ClusterTestSkipped": skipped or "not configured"}

    @staticmethod
    def _cluster_test_properties(
        artifacts: BurnInArtifacts,
        capacity: CapacityTarget,
        burn_in: BurnInConfig,
        cluster_test: SlurmClusterTest,
    ) -> dict[str, object]:
        return {
            "HeadNodeInstanceId": cluster_test.head_node_instance_id,
            "Partition": cluster_test.partition,
            "Command": [
                NODE_LAUNCHER, "cluster-test",
                *cluster_test_arguments(capacity, burn_in, Stack.of(artifacts).region),
            ],
            "Prefix": artifacts.cluster_test_prefix,
            "ReserveSeconds": str(int(CLUSTER_TEST_RESERVE.to_seconds())),
            "JobMinutes": str(CLUSTER_TEST_JOB_MINUTES),
        }

    @staticmethod
    def _allow_cluster_test(
        is_complete: lambda_.IFunction, artifacts: BurnInArtifacts, cluster_test: SlurmClusterTest
    ) -> None:
        """Run one command on the head node, follow it, and keep the run's marker and result."""
        stack = Stack.of(artifacts)
        head_node = stack.format_arn(
            service="ec2", resource="instance", resource_name=cluster_test.head_node_instance_id
        )
        run_shell = stack.format_arn(
            service="ssm", account="", resource="document", resource_name="AWS-RunShellScript"
        )
        is_complete.add_to_role_policy(
            iam.PolicyStatement(actions=["ssm:SendCommand"], resources=[head_node, run_shell])
        )
        is_complete.add_to_role_policy(
            iam.PolicyStatement(actions=["ssm:GetCommandInvocation"], resources=["*"])
        )
        allow_cluster_test_folder(
            is_complete,
            artifacts,
            ["s3:GetObject", "s3:PutObject"],
            "The gate writes the run's submission marker and reads the result under the "
            "cluster-test prefix, one folder per deployment request",
        )
