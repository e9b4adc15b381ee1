"""What Kubernetes sees of a Trainium node before any workload lands on it: labels and the burn-in
taint. The burn-in (a later issue) imports the taint constants to lift the taint on nodes that pass.
"""

from __future__ import annotations

from trn_burnin.catalog import InstanceSpec

LABEL_PREFIX = "trn-kit/"

# Every Trainium node starts tainted: nothing schedules there until the burn-in has proven the
# node's chips and EFA and removed the taint. Only the node's own daemons (device plugins, node
# problem detector, CSI node driver, monitoring agents) tolerate it.
BURN_IN_TAINT_KEY = LABEL_PREFIX + "burn-in"
BURN_IN_TAINT_VALUE = "pending"
BURN_IN_TAINT_EFFECT = "NoSchedule"

BURN_IN_TOLERATION = {"key": BURN_IN_TAINT_KEY, "operator": "Exists", "effect": BURN_IN_TAINT_EFFECT}


def trainium_node_labels(instance: InstanceSpec) -> dict[str, str]:
    """Labels every Trainium node carries, from the catalog entry it was launched as.

    The UltraServer a node belongs to is only known once it runs (EC2 instance topology), so the
    node group labels the UltraServer type and size; the per-node UltraServer id is discovered on
    the node, not configured here.
    """
    labels = {
        LABEL_PREFIX + "instance-type": instance.instance_type,
        LABEL_PREFIX + "catalog-entry": instance.key,
        LABEL_PREFIX + "neuron-cores": str(instance.neuron_cores_per_instance),
        LABEL_PREFIX + "efa-network-cards": str(instance.efa_network_cards),
        LABEL_PREFIX + "instances-per-ultraserver": str(instance.instances_per_ultraserver),
    }
    if instance.ultraserver_type:
        labels[LABEL_PREFIX + "ultraserver-type"] = instance.ultraserver_type
    return labels
