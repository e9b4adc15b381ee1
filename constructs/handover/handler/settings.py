"""What the handover knows of its cluster: the plan the stack wrote at synth time (``plan.json``,
bundled with this code) and the deploy-time names the stack passes in the environment."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

PLAN_PATH = Path(__file__).with_name("plan.json")
# Deploy-time values: CloudFormation resolves them into the function's environment.
ENVIRONMENT = {
    "bucket": "REPORTS_BUCKET",
    "reservation_id": "CAPACITY_RESERVATION_ID",
    "topic_arn": "ALERT_TOPIC_ARN",
}


@dataclass(frozen=True)
class ClusterTestSettings:
    """The all-reduce across the passed nodes (trn_burnin cluster-test) and how long it may take."""

    arguments: tuple[str, ...]  # of trn_burnin cluster-test, but for where the nodes are
    seconds: int  # from submission to result, the stage's own budget


@dataclass(frozen=True)
class SlurmSettings:
    cluster_name: str  # ParallelCluster's; its instances carry it as parallelcluster:cluster-name
    partition: str
    job_minutes: int
    job_environment: tuple[str, ...]  # NAME=value for the cluster test's salloc on the head node
    region: str
    package: str  # s3:// URI of the trn_burnin package
    bootstrap_source: str  # s3:// URI of the node bootstrap, fetched for every run
    bootstrap_path: str  # where the command puts it on the head node


@dataclass(frozen=True)
class KubernetesSettings:
    cluster_name: str
    nodegroup_name: str
    namespace: str
    node_selector: Mapping[str, str]  # selects the Trainium nodes (cordon at the block's end)
    job: Mapping[str, Any]  # the cluster test's Job with placeholders (see kubernetes.render_job)


@dataclass(frozen=True)
class Settings:
    stack_name: str
    orchestrator: str  # "slurm" or "eks"
    bucket: str
    reservation_id: str
    topic_arn: str
    state_parameter: str  # /trn-kit/<stack>/handover: the verdict for people and scripts
    log_group: str  # the advance function's: what each poll waited for
    node_alarm: str  # armed at a ready verdict, disarmed before the block ends
    reports_prefix: str
    handover_prefix: str
    cluster_test_prefix: str
    expected_nodes: int
    instances_per_ultraserver: int  # 1: no UltraServers
    ultraserver_type: str | None
    min_healthy_fraction: float
    whole_ultraservers: bool  # an UltraServer counts only when every one of its nodes passed
    replace_failed_nodes: bool
    max_replacements: int  # per failed node
    budget_seconds: int  # the whole handover, from its start
    poll_seconds: int
    # Modelled time from terminating a failed node to its replacement's report: a replacement
    # starts only while that still fits before the nodes' deadline.
    replacement_seconds: int
    # A node that has not reported this long after it launched is taken for hung: a failure, and
    # replaced like one.
    report_timeout_seconds: int
    cluster_test: ClusterTestSettings | None
    cluster_test_skipped: str | None  # why there is no cluster test; None: there is one
    slurm: SlurmSettings | None = None
    kubernetes: KubernetesSettings | None = None

    @property
    def reports_location(self) -> str:
        return f"s3://{self.bucket}/{self.reports_prefix}"

    @property
    def nodes_budget_seconds(self) -> int:
        """Stage 1 ends this long after the start so the cluster test always has its time."""
        reserve = self.cluster_test.seconds if self.cluster_test else 0
        return self.budget_seconds - reserve

    @classmethod
    def from_plan(cls, plan: Mapping[str, Any], deploy_time: Mapping[str, str]) -> "Settings":
        test = plan.get("cluster_test")
        slurm, kubernetes = plan.get("slurm"), plan.get("kubernetes")
        return cls(
            **{key: plan[key] for key in _SCALARS},
            **deploy_time,
            cluster_test=ClusterTestSettings(tuple(test["arguments"]), int(test["seconds"])) if test else None,
            cluster_test_skipped=plan.get("cluster_test_skipped"),
            slurm=SlurmSettings(**{**slurm, "job_environment": tuple(slurm["job_environment"])}) if slurm else None,
            kubernetes=KubernetesSettings(**kubernetes) if kubernetes else None,
        )

    @classmethod
    def load(cls, environ: Mapping[str, str] = os.environ, path: Path = PLAN_PATH) -> "Settings":
        deploy_time = {name: environ[variable] for name, variable in ENVIRONMENT.items()}
        return cls.from_plan(json.loads(path.read_text()), deploy_time)


_SCALARS = (
    "stack_name", "orchestrator", "state_parameter", "log_group", "node_alarm", "reports_prefix", "handover_prefix",
    "cluster_test_prefix", "expected_nodes", "instances_per_ultraserver", "ultraserver_type",
    "min_healthy_fraction", "whole_ultraservers", "replace_failed_nodes", "max_replacements",
    "budget_seconds", "poll_seconds", "replacement_seconds", "report_timeout_seconds",
)  # fmt: skip
