"""A real single-node Kubernetes on this machine (kubelet, containerd, kube-proxy, CoreDNS, controllers).

The e2e tier's cluster where kind cannot run (no Docker engine, no ``--privileged``). :mod:`.assets` finds the
programs (``make node-assets``), :mod:`.configs` renders their configuration, :mod:`.pki` makes the
certificates, :mod:`.host` records and restores what the node changes on the machine, :mod:`.cluster` runs
it, :mod:`.cli` is ``canopy-node up|down|status`` (``make node-up`` / ``make node-down``).
"""

from canopy_devkit.node.assets import NodeAssets, NodeAssetsMissing, find_node_assets, images_tarball, node_cache_dir
from canopy_devkit.node.cluster import Node, NodeError, sweep_stale_nodes

__all__ = [
    "Node",
    "NodeAssets",
    "NodeAssetsMissing",
    "NodeError",
    "find_node_assets",
    "images_tarball",
    "node_cache_dir",
    "sweep_stale_nodes",
]
