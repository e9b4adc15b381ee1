"""How the handover acts on the EKS cluster: the Trainium node group's Auto Scaling group (scale to
the block at its start, terminate a failed node so the group relaunches into its slot) and a few
Kubernetes API calls (the cluster test's Job, cordoning before the block ends)."""

from __future__ import annotations

import copy
import re
import urllib.parse
from typing import Any

from botocore.exceptions import ClientError

from . import aws
from .aws import iso
from .collective import ClusterRun
from .kube import STRATEGIC_MERGE, KubeError, Kubernetes
from .settings import KubernetesSettings, Settings

# Placeholders the stack leaves in the cluster test's Job (constructs/handover/eks_cluster_test.py).
PLACEHOLDERS = ("run_id", "nodes", "not_after", "bucket")
HOSTS_DIR = "hosts/"
LAUNCHER_KEY_NAME = "launcher.pub"


def render_job(template: dict[str, Any], values: dict[str, str], nodes: int) -> dict[str, Any]:
    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        if isinstance(value, str):
            for name in PLACEHOLDERS:
                value = value.replace("{{" + name + "}}", values[name])
        return value

    job = fill(copy.deepcopy(template))
    job["spec"]["completions"] = job["spec"]["parallelism"] = nodes
    return job


def autoscaling_groups(eks: KubernetesSettings) -> list[str]:
    nodegroup = aws.client("eks").describe_nodegroup(clusterName=eks.cluster_name, nodegroupName=eks.nodegroup_name)
    return [group["name"] for group in nodegroup["nodegroup"].get("resources", {}).get("autoScalingGroups", [])]


class KubernetesNodes:
    def __init__(self, settings: Settings):
        assert settings.kubernetes is not None
        self._settings, self._eks = settings, settings.kubernetes
        self._api: Kubernetes | None = None

    @property
    def api(self) -> Kubernetes:  # made once per invocation: it describes the cluster and signs
        if self._api is None:
            self._api = Kubernetes.for_cluster(self._eks.cluster_name)
        return self._api

    def ensure_capacity(self) -> None:
        """The node group is created at 0 (the block may not have started, and EKS scales it to 0
        before every block's end); at the handover's start its group asks for every reserved
        instance, as EKS documents for Capacity Blocks (scaling the Auto Scaling group)."""
        autoscaling = aws.client("autoscaling")
        for name in autoscaling_groups(self._eks):
            group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
            if group["DesiredCapacity"] < self._settings.expected_nodes:
                autoscaling.set_desired_capacity(
                    AutoScalingGroupName=name, DesiredCapacity=self._settings.expected_nodes, HonorCooldown=False
                )
                print(f"scaled {name} from {group['DesiredCapacity']} to {self._settings.expected_nodes} instances")

    def replace(self, instance_id: str) -> None:
        try:
            aws.client("autoscaling").terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=False
            )
        except ClientError as error:
            # Already leaving its group (a repeated request): the group relaunches either way.
            if error.response["Error"]["Code"] != "ValidationError":
                raise
            print(f"{instance_id}: {error.response['Error']['Message']}")

    def stop_new_work(self, reason: str) -> str:
        selector = ",".join(f"{key}={value}" for key, value in self._eks.node_selector.items())
        nodes = self.api.call("GET", "/api/v1/nodes?labelSelector=" + urllib.parse.quote(selector))["items"]
        for node in nodes:
            self.api.call("PATCH", f"/api/v1/nodes/{node['metadata']['name']}", {"spec": {"unschedulable": True}},
                          STRATEGIC_MERGE)
        return f"cordoned {len(nodes)} Trainium nodes ({reason})"

    # -- the cluster test (collective.ClusterTestRunner) ------------------------------------
    def _job_name(self, run: ClusterRun) -> str:
        return self._eks.job["metadata"]["name"].replace("{{run_id}}", run.run_id)

    def submit(self, run: ClusterRun) -> dict[str, str]:
        values = {"run_id": run.run_id, "nodes": str(run.nodes), "not_after": iso(run.deadline),
                  "bucket": self._settings.bucket}
        job = render_job(dict(self._eks.job), values, run.nodes)
        try:
            self.api.call("POST", f"/apis/batch/v1/namespaces/{self._eks.namespace}/jobs", job)
        except KubeError as error:
            if error.status != 409:  # AlreadyExists: a retried submission
                raise
        return {"Job": job["metadata"]["name"]}

    def submission_problem(self, run: ClusterRun, marker: dict[str, Any]) -> str | None:
        return None  # a pod that fails is named in pod 0's verdict; silence is judged at the deadline

    def where_to_look(self, run: ClusterRun, present: set[str], marker: dict[str, Any]) -> str:
        hosts = run.prefix + HOSTS_DIR
        registered = sorted(
            int(match[1]) for key in present if (match := re.fullmatch(re.escape(hosts) + r"(\d+)\.json", key))
        )
        launcher = "published" if run.prefix + LAUNCHER_KEY_NAME in present else "did not publish"
        job = marker.get("Job") or self._job_name(run)
        return (
            f"Job {job}: pod 0 {launcher} its SSH key; {len(registered)} of {run.nodes - 1} other pods "
            f"registered ({', '.join(map(str, registered)) or 'none'}) (check kubectl -n {self._eks.namespace} "
            f"get pods -l job-name={job} and the logs of its pods)"
        )
