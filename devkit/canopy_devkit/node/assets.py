"""Where a node's programs come from: the caches of ``hack/node-assets.sh`` and ``hack/envtest-assets.sh``.

Nothing is built or installed here: a miss raises :class:`NodeAssetsMissing` saying what to run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from canopy_devkit.controlplane.assets import K8S_VERSION, AssetsMissing, find_assets

COREDNS_VERSION = "1.12.1"
NODE_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns")
#: Programs the node takes from the machine (Debian packages hack/node-assets.sh installs when missing).
HOST_PROGRAMS = ("containerd", "ctr", "runc", "iptables", "iptables-save", "iptables-restore", "conntrack", "ip")
CNI_BIN_DIR = Path("/usr/lib/cni")


class NodeAssetsMissing(RuntimeError):
    """A program or image of the node is missing; the message says how to get it."""


@dataclass(frozen=True)
class NodeAssets:
    """Every executable and image file a node needs."""

    kube_apiserver: Path
    etcd: Path
    kubelet: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kube_proxy: Path
    coredns: Path
    pause_image_tar: Path
    pause_image: str
    containerd: Path
    ctr: Path
    runc: Path
    cni_bin_dir: Path


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    xdg = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(env.get("CANOPY_CACHE_ROOT") or Path(xdg) / "canopy-operator")


def node_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The directory ``hack/node-assets.sh`` builds into (same variables, same defaults)."""
    env = os.environ if env is None else env
    if explicit := env.get("CANOPY_NODE_CACHE"):
        return Path(explicit)
    k8s = env.get("ENVTEST_K8S_VERSION") or K8S_VERSION
    coredns = env.get("NODE_COREDNS_VERSION") or COREDNS_VERSION
    return cache_root(env) / f"node-{k8s}-coredns-{coredns}"


def images_tarball(env: Mapping[str, str] | None = None) -> Path:
    """Where ``hack/images.sh`` saves the operator and simulator images."""
    env = os.environ if env is None else env
    return Path(env.get("CANOPY_IMAGES_CACHE") or cache_root(env) / "images") / "canopy-images.tar"


def _host_program(name: str) -> Path:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise NodeAssetsMissing(f"{name} is not installed: run `make node-assets` (installs the Debian packages)")
    return Path(found)


def find_node_assets(env: Mapping[str, str] | None = None) -> NodeAssets:
    """Locate every program of the node without building or installing anything."""
    env = os.environ if env is None else env
    try:
        control = find_assets(env)
    except AssetsMissing as e:
        raise NodeAssetsMissing(str(e)) from e
    cache = node_cache_dir(env)
    missing = [n for n in (*NODE_BINARIES, "pause-image.tar") if not (cache / n).is_file()]
    if missing:
        raise NodeAssetsMissing(
            f"{', '.join(missing)} not found in {cache}: run `make node-assets` (hack/node-assets.sh builds them)"
        )
    for name in HOST_PROGRAMS:
        _host_program(name)
    if not (CNI_BIN_DIR / "bridge").is_file():
        raise NodeAssetsMissing(f"no CNI plugins in {CNI_BIN_DIR}: run `make node-assets`")
    name_file = cache / "pause-image.name"
    pause_image = name_file.read_text().strip() if name_file.is_file() else "canopy.local/pause:1.0"
    return NodeAssets(
        kube_apiserver=control.kube_apiserver,
        etcd=control.etcd,
        kubelet=cache / "kubelet",
        kube_controller_manager=cache / "kube-controller-manager",
        kube_scheduler=cache / "kube-scheduler",
        kube_proxy=cache / "kube-proxy",
        coredns=cache / "coredns",
        pause_image_tar=cache / "pause-image.tar",
        pause_image=pause_image,
        containerd=_host_program("containerd"),
        ctr=_host_program("ctr"),
        runc=_host_program("runc"),
        cni_bin_dir=CNI_BIN_DIR,
    )
