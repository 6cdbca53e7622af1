"""A local Kubernetes control plane (etcd + kube-apiserver, no Docker) for integration tests and the demo.

envtest for Python: :mod:`.assets` finds the binaries, :mod:`.certs` and :mod:`.kubeconfig` make the users,
:mod:`.processes` and :mod:`.lifecycle` run and clean up the children, :mod:`.rest` and :mod:`.crds` talk
to the API server, :mod:`.plane` puts it together. It must not import kopf: the demo starts it before the
operator, and the tests start it for every suite.
"""

from canopy_devkit.controlplane.assets import AssetPaths, AssetsMissing, cache_dir, find_assets
from canopy_devkit.controlplane.plane import (
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
