"""The real node's pure parts: its configuration, certificates, address and machine-state bookkeeping."""

from __future__ import annotations

import base64
import json
import os
import tomllib
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from canopy_devkit.node import host
from canopy_devkit.node.assets import NodeAssetsMissing, find_node_assets, node_cache_dir
from canopy_devkit.node.configs import (
    Layout,
    cni_config,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
)
from canopy_devkit.node.net import default_route_interface, first_ipv4
from canopy_devkit.node.pki import apiserver_hosts, write_pki


def layout(root: Path) -> Layout:
    return Layout(root=root, node_ip="192.0.2.7", apiserver_port=6443, pause_image="canopy.local/pause:1.0")


def _paths(value: object) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _paths(v)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


def test_containerd_config_runs_pods_without_cap_sys_resource_and_keeps_state_in_the_node_dir(tmp_path: Path) -> None:
    config = tomllib.loads(containerd_config(layout(tmp_path)))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == "canopy.local/pause:1.0"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"
    owned = [p for p in _paths(config) if not p.startswith(("/usr/lib/cni", "/usr/sbin/runc"))]
    assert owned
    assert all(p.startswith(str(tmp_path)) for p in owned), owned


def test_cni_config_never_masquerades_and_keeps_leases_in_the_node_dir(tmp_path: Path) -> None:
    bridge = cni_config(layout(tmp_path))["plugins"][0]
    assert bridge["type"] == "bridge"
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_kubelet_config_uses_cgroupfs_and_never_collects_imported_images(tmp_path: Path) -> None:
    config = kubelet_config(layout(tmp_path))
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failSwapOn"] is False
    assert config["imageGCHighThresholdPercent"] >= 98
    assert config["clusterDNS"] == ["192.0.2.7"]
    assert config["containerRuntimeEndpoint"] == f"unix://{tmp_path}/containerd.sock"
    assert config["authentication"]["anonymous"]["enabled"] is False


def test_kube_proxy_and_coredns_change_no_conntrack_sysctl_and_forward_nothing(tmp_path: Path) -> None:
    proxy = kube_proxy_config(layout(tmp_path), tmp_path / "kp.kubeconfig")
    assert proxy["mode"] == "iptables"
    assert proxy["conntrack"]["maxPerCore"] == 0
    assert proxy["iptables"]["localhostNodePorts"] is False
    dns = corefile(layout(tmp_path), tmp_path / "dns.kubeconfig")
    assert "forward" not in dns
    assert "bind 192.0.2.7" in dns


def test_apiserver_certificate_names_the_node_and_the_kubernetes_service(tmp_path: Path) -> None:
    hosts = apiserver_hosts(layout(tmp_path))
    assert {"192.0.2.7", "10.96.0.1", "kubernetes.default.svc.cluster.local"} <= set(hosts)


def test_pki_gives_each_component_the_user_its_default_rbac_expects(tmp_path: Path) -> None:
    pki = write_pki(layout(tmp_path))
    config = yaml.safe_load(pki.kubeconfig("kubelet").read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://192.0.2.7:6443"
    cert = x509.load_pem_x509_certificate(base64.b64decode(config["users"][0]["user"]["client-certificate-data"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:canopy-node"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    assert oct(pki.key("sa").stat().st_mode & 0o777) == "0o600"


def test_node_address_comes_from_the_default_route() -> None:
    table = "Iface\tDestination\tGateway\nlo\t0000007F\t00000000\neth0\t00000000\t010200C0\n"
    assert default_route_interface(table) == "eth0"
    assert default_route_interface("Iface\tDestination\n") is None
    out = "4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever"
    assert first_ipv4(out) == "192.0.2.2"


def test_missing_node_programs_say_to_run_make_node_assets(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("kube-apiserver", "etcd"):
        (fake / name).write_text("#!/bin/sh\n")
        (fake / name).chmod(0o755)
    env = {"KUBEBUILDER_ASSETS": str(fake), "CANOPY_NODE_CACHE": str(tmp_path / "empty"), "HOME": str(tmp_path)}
    with pytest.raises(NodeAssetsMissing, match="make node-assets"):
        find_node_assets(env)


def test_node_cache_is_keyed_by_version() -> None:
    path = node_cache_dir({"HOME": "/home/u", "ENVTEST_K8S_VERSION": "1.35.0"})
    assert path == Path("/home/u/.cache/canopy-operator/node-1.35.0-coredns-1.12.1")


def test_mount_points_decode_escapes() -> None:
    info = "36 25 0:32 / /run/netns/cni-1 rw shared:5 - nsfs nsfs rw\n37 25 0:33 / /tmp/a\\040b rw - tmpfs t rw\n"
    assert host.mount_points(info) == ["/run/netns/cni-1", "/tmp/a b"]


SAVE_BEFORE = "# Generated\n*filter\n:INPUT ACCEPT [10:200]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [3:4]\nCOMMIT\n"
SAVE_AFTER = (
    "*filter\n:INPUT ACCEPT [99:999]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n"
    "-A FORWARD -j KUBE-FORWARD\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"
)


def test_iptables_comparison_ignores_counters_and_empty_tables() -> None:
    assert host.normalize_iptables(SAVE_BEFORE) == ""
    assert "KUBE-FORWARD" in host.normalize_iptables(SAVE_AFTER)
    assert "*nat" not in host.normalize_iptables(SAVE_AFTER)
    assert set(host.iptables_tables(SAVE_AFTER)) == {"filter", "nat"}
    assert host.iptables_tables(SAVE_AFTER)["nat"].endswith("COMMIT\n")


def test_differences_name_what_the_node_left_behind() -> None:
    before = host.Snapshot(
        sysctls={"net/ipv4/ip_forward": "0"},
        iptables={"ip": SAVE_BEFORE},
        links=["eth0", "lo"],
        mounts=["/"],
        dirs={"/var/lib/cni": None, "/run/netns": []},
        cgroups=["/sys/fs/cgroup/cpu/user"],
    )
    after = host.Snapshot(
        sysctls={"net/ipv4/ip_forward": "1"},
        nft_tables=["table ip filter"],
        iptables={"ip": SAVE_AFTER},
        links=["canopy0", "eth0", "lo"],
        mounts=["/", "/run/netns/cni-1"],
        dirs={"/var/lib/cni": ["results"], "/run/netns": ["cni-1"]},
        cgroups=["/sys/fs/cgroup/cpu/kubepods", "/sys/fs/cgroup/cpu/user"],
    )
    found = host.differences(before, after)
    assert len(found) == 8, found
    assert any("ip_forward" in f for f in found)
    assert any("canopy0" in f for f in found)
    assert any("kubepods" in f for f in found)
    assert host.differences(before, before) == []
    assert host.differences(before, host.Snapshot.from_json(before.to_json())) == []


def test_snapshot_round_trips_through_json() -> None:
    snapshot = host.Snapshot(sysctls={"vm/panic_on_oom": "0"}, dirs={"/etc/cni": None})
    assert host.Snapshot.from_json(snapshot.to_json()) == snapshot
    assert json.loads(snapshot.to_json())["dirs"] == {"/etc/cni": None}


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/proc/sys/net/ipv4/ip_forward").exists(), reason="needs root")
def test_capture_records_the_machine() -> None:
    snapshot = host.capture()
    assert "net/ipv4/ip_forward" in snapshot.sysctls
    assert "lo" in snapshot.links
    assert "/" in snapshot.mounts
