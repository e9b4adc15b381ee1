"""Cluster all-reduce without Slurm: pods find each other through S3 and nccom-test reaches them over SSH.

On EKS the handover gate's second stage is an Indexed Job with one pod per passed node. They share
one S3 folder, the run prefix ``s3://<reports bucket>/cluster-test/<run id>/``:

- ``launcher.pub``: the public SSH key of the pod with completion index 0, which runs nccom-test;
- ``hosts/<index>.json``: each other pod's address, written once its sshd accepts that key;
- ``result.json``: the verdict (cluster_test_schema.json), which the gate waits for.
"""

from __future__ import annotations

LAUNCHER_KEY_NAME = "launcher.pub"
HOSTS_DIR = "hosts/"
RESULT_NAME = "result.json"
