"""A local Kubernetes control plane (etcd + kube-apiserver, no Docker) for integration tests and the demo.

It must not import kopf: the demo starts it before the operator, and the tests start it for every suite.
"""

from canopy_operator.devenv.assets import AssetPaths, AssetsMissing, cache_dir, find_assets
from canopy_operator.devenv.controlplane import (
    ADMIN_GROUPS,
    ADMIN_USER,
    OPERATOR_GROUPS,
    OPERATOR_USER,
    ControlPlane,
    ControlPlaneError,
)

__all__ = [
    "ADMIN_GROUPS",
    "ADMIN_USER",
    "OPERATOR_GROUPS",
    "OPERATOR_USER",
    "AssetPaths",
    "AssetsMissing",
    "ControlPlane",
    "ControlPlaneError",
    "cache_dir",
    "find_assets",
]
