"""How long each step of a handover takes, modelled, in one place. The settings are checked against
it at synth; ParallelCluster's bootstrap timeouts and the handover's deadlines derive from it; and
benchmarks/handover_timeline.py prints it, each figure with what it rests on.

None of these durations has been measured on Trainium. A step's ``minutes`` is the expected time;
deadlines allow ``SAFETY`` times that, because a deadline too short fails a healthy cluster while
one too long only makes a broken one wait.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SAFETY = 1.5
POLL_SECONDS = 60  # the handover looks at EC2 and the reports once a minute
# CloudFormation waits at most an hour for a custom resource; the deploy-time handover keeps inside
# it with room for the Provider framework's own timeout message.
HANDOVER_MAX_MINUTES = 55
# ParallelCluster 3.16.1's own default for both bootstrap timeouts (pcluster/constants.py
# NODE_BOOTSTRAP_TIMEOUT = 2100 s); the kit never sets less.
PCLUSTER_DEFAULT_BOOTSTRAP_MINUTES = 35
IMAGES = ("default", "kit")


@dataclass(frozen=True)
class Step:
    name: str
    minutes: float
    source: str


def _boot() -> Step:
    return Step("instance launch and boot", 3, "EC2 launch to the OS running user data on a 48xlarge (estimate)")


def _setup(orchestrator: str, image: str) -> Step:
    if orchestrator == "slurm":
        if image == "kit":
            return Step("ParallelCluster node configuration", 3, "cookbook config and finalize (estimate)")
        return Step("ParallelCluster node configuration and Neuron install", 13,
                    "cookbook config, then install_neuron.sh: driver DKMS build, apt packages, compiler "
                    "and nki from pip (estimate)")
    if image == "kit":
        return Step("EKS node join, burn-in image already on the node", 2, "nodeadm join (estimate)")
    return Step("EKS node join and Neuron container pull", 6,
                "nodeadm join, then a pull of the several-GB Neuron container (estimate)")


BURN_IN_WARMUP_SECONDS = 30


def node_steps(orchestrator: str, image: str, duration_seconds: int) -> list[Step]:
    """From an instance's launch to its report."""
    return [
        _boot(),
        _setup(orchestrator, image),
        Step("burn-in compile, once per node", 2, "neuronx-cc on the kernel's fori_loop program (estimate)"),
        Step("warm-up", BURN_IN_WARMUP_SECONDS / 60, "trn_burnin run --warmup (the kit's default)"),
        Step("measured burn-in", duration_seconds / 60, "burnInDurationSeconds"),
        Step("report and metrics upload", 0.5, "S3 and CloudWatch puts (estimate)"),
    ]


def replacement_steps() -> list[Step]:
    """From terminating a failed node to its successor's launch."""
    return [
        Step("failed instance shutting down", 1, "EC2 (estimate)"),
        Step("Capacity Block slot cleanup", 6, "EC2: a terminated instance's slot needs several minutes "
             "before a replacement launches (trainium-platform-facts.md)"),
        Step("orchestrator relaunches into the slot", 1, "clustermgtd's 60 s loop; the Auto Scaling group's "
             "next activity"),
    ]


def cluster_test_step(orchestrator: str) -> Step:
    if orchestrator == "slurm":
        return Step("cluster all-reduce", 2, "salloc from the head node, NEFF generation and four message "
                    "sizes (estimate)")
    return Step("cluster all-reduce", 4, "the Job's pods start, meet through S3, then the same nccom-test "
                "(estimate)")


# The cluster test's own deadline: it is stopped then, whatever it is doing.
CLUSTER_TEST_BUDGET_MINUTES = {"slurm": 10, "eks": 20}
SLURM_CLUSTER_TEST_JOB_MINUTES = 8


def minutes(steps: list[Step]) -> float:
    return sum(step.minutes for step in steps)


@dataclass(frozen=True)
class Budgets:
    """The deadlines one configuration runs with, all from the model above."""

    orchestrator: str
    image: str
    duration_seconds: int

    @property
    def node_minutes(self) -> float:
        return minutes(node_steps(self.orchestrator, self.image, self.duration_seconds))

    @property
    def setup_minutes(self) -> float:
        return minutes(node_steps(self.orchestrator, self.image, 0)[:2])

    @property
    def report_timeout_seconds(self) -> int:
        """A node that has not reported this long after its launch is taken for hung."""
        return math.ceil(SAFETY * self.node_minutes * 60)

    @property
    def replacement_seconds(self) -> int:
        """From terminating a failed node to its successor's report, as expected: a replacement
        starts only while it is likely to finish (one that does not is a failed node, as the node
        it replaced was)."""
        return math.ceil((minutes(replacement_steps()) + self.node_minutes) * 60)

    @property
    def cluster_test_minutes(self) -> int:
        return CLUSTER_TEST_BUDGET_MINUTES[self.orchestrator]

    def first_pass_minutes(self, cluster_test: bool) -> float:
        """What a handover must allow: every node's first report (with the margin), then the
        cluster test's own deadline."""
        return SAFETY * self.node_minutes + (self.cluster_test_minutes if cluster_test else 0)

    def longest_duration_seconds(self, handover_minutes: int, cluster_test: bool) -> int:
        """The longest burnInDurationSeconds whose first pass still fits ``handover_minutes``."""
        without = Budgets(self.orchestrator, self.image, 0).first_pass_minutes(cluster_test)
        return max(0, int((handover_minutes - without) / SAFETY * 60))

    @property
    def compute_node_bootstrap_minutes(self) -> int:
        """ParallelCluster's ComputeNodeBootstrapTimeout: boot and configuration (the burn-in runs
        in the background after it), with the margin, never below ParallelCluster's default."""
        return max(PCLUSTER_DEFAULT_BOOTSTRAP_MINUTES, math.ceil(2 * self.setup_minutes))

    @property
    def head_node_bootstrap_minutes(self) -> int:
        """ParallelCluster's HeadNodeBootstrapTimeout: its own configuration, then its wait for the
        static nodes of an active block to be up, within CloudFormation's hour."""
        return min(HANDOVER_MAX_MINUTES, max(PCLUSTER_DEFAULT_BOOTSTRAP_MINUTES,
                                             math.ceil(SAFETY * (HEAD_NODE_SETUP_MINUTES + self.setup_minutes))))


HEAD_NODE_SETUP_MINUTES = 12  # the head node's own cookbook run (estimate)
# The handover's backup start, after the block's start (handler/gate.py SCHEDULE_AFTER_START).
BACKUP_START_MINUTES = 2


def start_steps(orchestrator: str) -> list[Step]:
    """A staged cluster, from the block's start to its instances launching."""
    trigger = Step("the handover starts on EC2's Capacity Block Delivered event", 0.5,
                   "EventBridge delivers in seconds (estimate); the one-time schedule "
                   f"{BACKUP_START_MINUTES} minutes after the start backs it up")
    if orchestrator == "slurm":
        return [trigger, Step(
            "clustermgtd, restarted by the handover, finds the block active", 1,
            "clustermgtd's 60 s loop (ParallelCluster 3.16.1); left alone, its Capacity Block check "
            "runs only every 11 minutes (slurm_plugin/capacity_block_manager.py)")]
    return [trigger, Step("the handover scales the node group's Auto Scaling group", 0.5,
                          "SetDesiredCapacity; launches start within seconds (estimate)")]


def deploy_steps(orchestrator: str) -> list[Step]:
    """A deploy after the block's start, from `cdk deploy` to the first instance launching (the
    critical path; steps CloudFormation runs side by side count once)."""
    network = Step("VPC, subnets, NAT gateway, endpoints", 3, "CloudFormation (estimate)")
    storage = Step("FSx for Lustre file system", 12, "PERSISTENT_2 creation, commonly 10 to 15 minutes "
                   "(estimate; AWS publishes no figure)")
    if orchestrator == "slurm":
        return [network, storage, Step(
            "ParallelCluster stack and head node, until clustermgtd launches the static nodes", 10,
            "nested stack, head node boot and its cookbook up to clustermgtd (estimate); the rest of the "
            "head node's setup and the handover stack run while the nodes boot")]
    return [network, Step("FSx for Lustre beside the EKS control plane (the longer of the two)", 12,
                          "EKS control plane creation, commonly 10 minutes (estimate); FSx as above"),
            Step("system node group, add-ons and the kit's manifests", 6, "CloudFormation and kubectl (estimate)"),
            Step("the handover stack, then its first poll scales the Trainium node group", 1.5,
                 "Lambda, Step Functions and the gate (estimate)")]


def verdict_steps(orchestrator: str, cluster_test: bool) -> list[Step]:
    """From the last node's report to the verdict."""
    return [
        Step("the handover sees the last report", POLL_SECONDS / 2 / 60,
             f"it polls every {POLL_SECONDS} s: half a poll on average"),
        *([cluster_test_step(orchestrator)] if cluster_test else []),
        Step("verdict to the alert topic, SSM and S3", 0.2, "three API calls (estimate)"),
    ]


def handover_timeline(orchestrator: str, staged: bool, image: str, duration_seconds: int,
                      cluster_test: bool = True) -> list[Step]:
    """Every step from the block's start to the verdict, every node healthy."""
    before = start_steps(orchestrator) if staged else deploy_steps(orchestrator)
    return [*before, *node_steps(orchestrator, image, duration_seconds), *verdict_steps(orchestrator, cluster_test)]
