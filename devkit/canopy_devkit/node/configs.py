"""The configuration files of a single-node cluster, rendered from a :class:`Layout` (pure: no I/O).

Settings that matter on our machines (cgroup v1 without systemd, no ``CAP_SYS_RESOURCE``, no network to the
outside) are explained where they are set; ``/work/shared/real-cluster.md`` has the background.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NODE_NAME = "canopy-node"
CLUSTER_DOMAIN = "cluster.local"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
BRIDGE = "canopy0"
CNI_NETWORK = "canopy-bridge"


@dataclass(frozen=True)
class Layout:
    """Where one node keeps everything: every path lives under ``root`` (the harness's own directory)."""

    root: Path
    node_ip: str
    apiserver_port: int
    pause_image: str
    dns_ready_port: int = 8181
    cni_bin_dir: Path = Path("/usr/lib/cni")
    runc: Path = Path("/usr/sbin/runc")

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.root / "pod-logs"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def server_url(self) -> str:
        return f"https://{self.node_ip}:{self.apiserver_port}"


def _toml_string(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def containerd_config(layout: Layout) -> str:
    """containerd 1.6 (config version 2): CRI with cgroupfs, our pause image, our CNI, all state under root."""
    runc_root = layout.root / "runc"
    return f"""\
version = 2
root = {_toml_string(layout.containerd_root)}
state = {_toml_string(layout.containerd_state)}
# Snapshotters this machine cannot use; the CRI uses overlayfs.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = {_toml_string(layout.containerd_socket)}

[ttrpc]
  address = {_toml_string(layout.root / "containerd-ttrpc.sock")}

[plugins."io.containerd.internal.v1.opt"]
  path = {_toml_string(layout.root / "containerd" / "opt")}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {_toml_string(layout.pause_image)}
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails ("can't get final child's PID").
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  max_container_log_line_size = 16384

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = {_toml_string(layout.runc)}
  Root = {_toml_string(runc_root)}
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = {_toml_string(layout.cni_bin_dir)}
  conf_dir = {_toml_string(layout.cni_conf_dir)}
  max_conf_num = 1
"""


def cni_config(layout: Layout) -> dict[str, Any]:
    """One bridge network with host-local IPAM; no masquerading (nothing may leave the machine)."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_data_dir),
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "loopback"},
        ],
    }


def kubelet_config(layout: Layout) -> dict[str, Any]:
    """KubeletConfiguration for cgroup v1 without systemd, with locally imported images never collected."""
    pki = layout.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki / "client-ca.crt")},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "failSwapOn": False,
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [layout.node_ip],
        "resolvConf": str(layout.root / "resolv.conf"),
        "podLogsDir": str(layout.pod_logs_dir),
        # Images come from `ctr images import`, not a registry: never garbage-collect them.
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "kernelMemcgNotification": False,
        "maxPods": 110,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
    }


def kube_proxy_config(layout: Layout, kubeconfig: Path) -> dict[str, Any]:
    """iptables mode; no conntrack or route_localnet sysctls (kube-proxy would change them otherwise)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": layout.node_ip,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "syncPeriod": "10s", "minSyncPeriod": "0s"},
    }


def corefile(layout: Layout, kubeconfig: Path) -> str:
    """CoreDNS serving cluster.local on the node's address, with no ``forward``: nothing leaves the machine."""
    return f"""\
.:53 {{
    bind {layout.node_ip}
    errors
    ready 127.0.0.1:{layout.dns_ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loop
    reload
}}
"""


def dump_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def dump_json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2) + "\n"
