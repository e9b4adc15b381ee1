#!/bin/bash
# ParallelCluster head node, OnNodeConfigured and OnNodeUpdated (written by trn_constructs.slurm).
#
# ParallelCluster's clustermgtd replaces every DRAINED static node once it is idle
# (terminate_drain_nodes, default True in 3.16.1's slurm_plugin/clustermgtd.py). The kit's burn-in
# drains a node whose chips failed, and the handover decides whether and how often to replace it
# (burnInReplaceFailedNodes, burnInMaxReplacements); left on, clustermgtd would replace such a node
# behind the handover's back, again and again. clustermgtd re-reads this file on every loop.
# DOWN nodes are still replaced (terminate_down_nodes): `scontrol update nodename=<n> state=down
# reason=...` replaces a node by hand.
set -euo pipefail
conf="${CLUSTERMGTD_CONF:-/etc/parallelcluster/slurm_plugin/parallelcluster_clustermgtd.conf}"
if [ ! -f "$conf" ]; then
    echo "no $conf: not a ParallelCluster 3 head node" >&2
    exit 1
fi
if grep -q '^terminate_drain_nodes' "$conf"; then
    sed -i 's/^terminate_drain_nodes.*/terminate_drain_nodes = False/' "$conf"
elif grep -q '^\[clustermgtd\]' "$conf"; then
    sed -i '/^\[clustermgtd\]/a terminate_drain_nodes = False' "$conf"
else
    printf '[clustermgtd]\nterminate_drain_nodes = False\n' >>"$conf"
fi
echo "clustermgtd keeps drained nodes: $(grep '^terminate_drain_nodes' "$conf")"
