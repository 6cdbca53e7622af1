"""Where the kube-apiserver and etcd binaries of the local control plane come from.

Lookup order, per binary (the conventions controller-runtime's envtest users already know):

1. ``TEST_ASSET_KUBE_APISERVER`` / ``TEST_ASSET_ETCD``;
2. ``$KUBEBUILDER_ASSETS/<name>``;
3. this project's cache, filled by ``make envtest-assets`` (``hack/envtest-assets.sh``):
   ``${CANOPY_ENVTEST_CACHE:-${XDG_CACHE_HOME:-~/.cache}/canopy-operator/envtest}/k8s-<v>-etcd-<v>/``;
4. ``/usr/local/kubebuilder/bin/<name>``.

Nothing is built or downloaded here: a miss raises :class:`AssetsMissing` saying how to get the binaries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "1.34.4"
ETCD_VERSION = "3.6.4"
KUBEBUILDER_DEFAULT_DIR = Path("/usr/local/kubebuilder/bin")

_ENV_VARS = {"kube-apiserver": "TEST_ASSET_KUBE_APISERVER", "etcd": "TEST_ASSET_ETCD"}


class AssetsMissing(RuntimeError):
    """The kube-apiserver or etcd binary was not found; the message says how to get it."""


@dataclass(frozen=True)
class AssetPaths:
    """Executable paths of the control plane's binaries."""

    kube_apiserver: Path
    etcd: Path


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The directory ``hack/envtest-assets.sh`` builds into (same variables, same defaults)."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    root = env.get("CANOPY_ENVTEST_CACHE") or str(Path(xdg) / "canopy-operator" / "envtest")
    k8s = env.get("ENVTEST_K8S_VERSION") or K8S_VERSION
    etcd = env.get("ENVTEST_ETCD_VERSION") or ETCD_VERSION
    return Path(root) / f"k8s-{k8s}-etcd-{etcd}"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _candidates(name: str, env: Mapping[str, str]) -> list[Path]:
    found: list[Path] = []
    if assets := env.get("KUBEBUILDER_ASSETS"):
        found.append(Path(assets) / name)
    found.append(cache_dir(env) / name)
    found.append(KUBEBUILDER_DEFAULT_DIR / name)
    return found


def find_binary(name: str, env: Mapping[str, str] | None = None) -> Path:
    """The first executable ``name`` in the lookup order; :class:`AssetsMissing` when there is none."""
    env = os.environ if env is None else env
    var = _ENV_VARS[name]
    if explicit := env.get(var):
        path = Path(explicit)
        if not _is_executable(path):
            raise AssetsMissing(f"{var}={explicit} is not an executable file")
        return path
    candidates = _candidates(name, env)
    for path in candidates:
        if _is_executable(path):
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise AssetsMissing(
        f"{name} not found (looked at ${var}, {looked}). "
        "Run `make envtest-assets` to build kube-apiserver and etcd into the cache "
        "(or point KUBEBUILDER_ASSETS at existing envtest binaries)."
    )


def find_assets(env: Mapping[str, str] | None = None) -> AssetPaths:
    """Locate kube-apiserver and etcd without building anything."""
    return AssetPaths(kube_apiserver=find_binary("kube-apiserver", env), etcd=find_binary("etcd", env))
