"""A real single-node Kubernetes cluster on this machine, for the e2e tier and for people (``make node-up``).

etcd, kube-apiserver (bound to the machine's own address, Node+RBAC authorization, service-account keys),
kube-controller-manager, kube-scheduler, containerd with runc and the bridge CNI plugin, kubelet, kube-proxy
(iptables) and CoreDNS, all as child processes of this one, all their files in one directory of their own.
:meth:`Node.stop` stops every pod and process and puts back what they changed on the machine
(:mod:`canopy_devkit.node.host`); it also runs at interpreter exit and on SIGTERM/SIGHUP, and a node whose
owner died without stopping it is cleaned up by the next one's :meth:`Node.start`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from canopy_devkit.controlplane import lifecycle
from canopy_devkit.controlplane.processes import ManagedProcess, free_ports
from canopy_devkit.controlplane.rest import RestClient
from canopy_devkit.node import configs, host
from canopy_devkit.node.assets import NodeAssets, cache_root, find_node_assets
from canopy_devkit.node.configs import NODE_NAME, Layout
from canopy_devkit.node.net import node_ip as detect_node_ip
from canopy_devkit.node.pki import Pki, write_pki

log = logging.getLogger(__name__)

DIR_PREFIX = "canopy-node-"
OWNER_FILE = "owner.pid"
SNAPSHOT_FILE = "host-before.json"
PREFERRED_APISERVER_PORT = 6443
LOG_TAIL_LINES = 30
POLL = 0.25

APISERVER_TIMEOUT = 90.0
CONTAINERD_TIMEOUT = 30.0
NODE_READY_TIMEOUT = 120.0
DNS_TIMEOUT = 30.0
DRAIN_TIMEOUT = 60.0
LOCK_TIMEOUT = 600.0


class NodeError(RuntimeError):
    """The node did not start (or a step on it failed); the message has the tail of the relevant log."""


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the API server binds (TIME_WAIT is fine)
        try:
            s.bind((address, port))
        except OSError:
            return False
        return True


def _free_port_on(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (the node's directory: every child of ours names it)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
    return found


def _kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class Node:
    """One single-node cluster; ``with Node() as node:`` starts it and stops it, leaving the machine clean.

    Root only. One node per machine at a time (a lock in the cache directory; a second caller waits).
    """

    def __init__(
        self,
        assets: NodeAssets | None = None,
        *,
        node_ip: str | None = None,
        dir: Path | None = None,
        tmp_root: Path | None = None,
    ) -> None:
        self._assets = assets
        self._node_ip = node_ip
        self._fixed_dir = dir
        self._tmp_root = tmp_root
        self._dir: Path | None = None
        self._layout: Layout | None = None
        self._pki: Pki | None = None
        self._before: host.Snapshot | None = None
        self._procs: dict[str, ManagedProcess] = {}
        self._lock: IO[str] | None = None
        self.startup_seconds: float | None = None
        self.stop_problems: list[str] = []
        """What :meth:`stop` could not put back (empty when the machine is as it was)."""

    # ---------------------------------------------------------------------------------------- public API

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def dir(self) -> Path:
        if self._dir is None:
            raise NodeError("the node is not started")
        return self._dir

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            raise NodeError("the node is not started")
        return self._layout

    @property
    def server_url(self) -> str:
        return self.layout.server_url

    @property
    def before(self) -> host.Snapshot | None:
        """The machine as it was found (recorded by :meth:`start`)."""
        return self._before

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items() if p.pid is not None and p.running()}

    def admin_kubeconfig(self) -> Path:
        """Kubeconfig of user ``admin`` in ``system:masters``."""
        return self._pki_files().kubeconfig("admin")

    def admin_client(self) -> RestClient:
        pki = self._pki_files()
        return RestClient(self.server_url, pki.cert("serving-ca"), pki.cert("admin"), pki.key("admin"))

    def ctr(self, *args: str, timeout: float = 300.0, input_path: Path | None = None) -> str:
        """Run ``ctr -n k8s.io <args>`` against the node's containerd; raises NodeError on failure."""
        assets = self._assets_or_find()
        command = [str(assets.ctr), "--address", str(self.layout.containerd_socket), "-n", "k8s.io", *args]
        stdin = input_path.open("rb") if input_path else None
        try:
            result = subprocess.run(command, stdin=stdin, capture_output=True, timeout=timeout, check=False)
        finally:
            if stdin:
                stdin.close()
        if result.returncode != 0:
            raise NodeError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.decode()[-2000:]}")
        return result.stdout.decode()

    def load_images(self, tarball: Path) -> None:
        """Import a docker-archive tarball (``docker save``) into the node's containerd (namespace k8s.io)."""
        self.ctr("images", "import", "-", input_path=tarball)

    def start(self) -> None:
        """Start every component; returns when the node is Ready and DNS answers. Cleans up on failure."""
        if self._dir is not None:
            raise NodeError("the node is already started")
        if os.geteuid() != 0:
            raise NodeError("a real node needs root (containerd, mounts, iptables)")
        began = time.monotonic()
        assets = self._assets_or_find()
        self._take_lock()
        try:
            sweep_stale_nodes(self._tmp_root)
            self._dir = self._make_dir()
            self._before = host.capture()
            (self._dir / SNAPSHOT_FILE).write_text(self._before.to_json(), encoding="utf-8")
            lifecycle.register(self)
            self._layout = self._make_layout(assets)
            self._write_files(assets)
            self._start_control_plane(assets)
            self._start_node(assets)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info(json.dumps({"event": "node_started", "server": self.server_url, "seconds": self.startup_seconds}))

    def stop(self) -> None:
        """Stop every pod and process, put the machine back as found, remove the directory. Idempotent."""
        if self._dir is None:
            self._release_lock()
            return
        with contextlib.suppress(Exception):
            self._drain()
        for name in ("coredns", "kube-proxy", "kubelet"):
            self._stop_process(name)
        self._kube_proxy_cleanup()
        self._stop_leftover_containers()
        for name in ("containerd", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            self._stop_process(name)
        _kill_all(_pids_mentioning(str(self._dir)))
        if self._before is not None:
            self.stop_problems = host.restore(self._before, extra_dirs=[str(self._dir)])
        host.unmount_under([str(self._dir)])
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._fixed_dir is not None:
            with contextlib.suppress(OSError):
                self._fixed_dir.rmdir()
        self._dir = None
        lifecycle.unregister(self)
        self._release_lock()
        if self.stop_problems:
            log.warning(json.dumps({"event": "node_left_changes", "problems": self.stop_problems}))

    def tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        proc = self._procs.get(name)
        return proc.tail(lines) if proc else ""

    # -------------------------------------------------------------------------------------- start-up steps

    def _assets_or_find(self) -> NodeAssets:
        if self._assets is None:
            self._assets = find_node_assets()
        return self._assets

    def _pki_files(self) -> Pki:
        if self._pki is None:
            raise NodeError("the node is not started")
        return self._pki

    def _take_lock(self) -> None:
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        lock = (root / ".node-run.lock").open("w")
        deadline = time.monotonic() + LOCK_TIMEOUT
        said = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    log.warning(json.dumps({"event": "node_waiting_for_lock", "lock": str(root / ".node-run.lock")}))
                    said = True
                if time.monotonic() > deadline:
                    lock.close()
                    raise NodeError(f"another node holds {root / '.node-run.lock'} (one node per machine)") from None
                time.sleep(1)
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _make_dir(self) -> Path:
        if self._fixed_dir is not None:
            self._fixed_dir.mkdir(parents=True, exist_ok=False)
            path = self._fixed_dir
        else:
            path = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=self._tmp_root))
        path.chmod(0o755)
        (path / OWNER_FILE).write_text(str(os.getpid()), encoding="ascii")
        return path

    def _make_layout(self, assets: NodeAssets) -> Layout:
        address = self._node_ip or detect_node_ip()
        port = PREFERRED_APISERVER_PORT if _port_free(address, PREFERRED_APISERVER_PORT) else _free_port_on(address)
        return Layout(
            root=self.dir,
            node_ip=address,
            apiserver_port=port,
            pause_image=assets.pause_image,
            dns_ready_port=free_ports(1)[0],
            cni_bin_dir=assets.cni_bin_dir,
            runc=assets.runc,
        )

    def _write_files(self, assets: NodeAssets) -> None:
        layout = self.layout
        self._pki = write_pki(layout)
        layout.cni_conf_dir.mkdir(parents=True)
        (layout.cni_conf_dir / "10-canopy-bridge.conflist").write_text(configs.dump_json(configs.cni_config(layout)))
        (layout.root / "containerd.toml").write_text(configs.containerd_config(layout))
        (layout.root / "kubelet.yaml").write_text(configs.dump_yaml(configs.kubelet_config(layout)))
        (layout.root / "resolv.conf").write_text("# canopy-node: pods resolve through the cluster DNS only\n")
        proxy = configs.kube_proxy_config(layout, self._pki.kubeconfig("kube-proxy"))
        (layout.root / "kube-proxy.yaml").write_text(configs.dump_yaml(proxy))
        (layout.root / "Corefile").write_text(configs.corefile(layout, self._pki.kubeconfig("coredns")))
        (layout.root / "logs").mkdir()

    def _spawn(self, name: str, args: Sequence[str]) -> ManagedProcess:
        proc = ManagedProcess(name, list(args), self.dir / "logs" / f"{name}.log")
        proc.start()
        self._procs[name] = proc
        return proc

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float, procs: Sequence[str]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                if ready():
                    return
            for name in procs:
                code = self._procs[name].exit_code()
                if code is not None:
                    raise NodeError(f"{name} exited with code {code} while waiting for {what}:\n{self.tail(name)}")
            if time.monotonic() > deadline:
                tails = "".join(f"\n--- last lines of {n}'s log:\n{self.tail(n)}" for n in procs)
                raise NodeError(f"{what} not within {timeout:.0f}s{tails}")
            time.sleep(POLL)

    def _start_control_plane(self, assets: NodeAssets) -> None:
        layout, pki = self.layout, self._pki_files()
        client_port, peer_port = free_ports(2)
        etcd_url = f"http://127.0.0.1:{client_port}"
        self._spawn(
            "etcd",
            [
                str(assets.etcd),
                "--name=canopy-node",
                f"--data-dir={layout.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=canopy-node=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
            ],
        )
        self._wait("etcd health", lambda: _http_ok(f"{etcd_url}/health"), 30.0, ["etcd"])
        self._spawn(
            "kube-apiserver",
            [
                str(assets.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={layout.node_ip}",
                f"--advertise-address={layout.node_ip}",
                f"--secure-port={layout.apiserver_port}",
                f"--cert-dir={layout.root / 'apiserver-certs'}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.cert('client-ca')}",
                f"--service-cluster-ip-range={configs.SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={pki.key('sa')}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                # CEL mutating policies (beta, off by default in 1.34): the e2e tier plays OpenShift's
                # restricted-v2 UID assignment with one (tests/support/openshift.py).
                "--feature-gates=MutatingAdmissionPolicy=true",
                "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                f"--kubelet-certificate-authority={pki.cert('serving-ca')}",
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
            ],
        )
        self._wait("kube-apiserver /readyz", self._apiserver_ready, APISERVER_TIMEOUT, ["kube-apiserver", "etcd"])
        common = ["--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false"]
        self._spawn(
            "kube-controller-manager",
            [
                str(assets.kube_controller_manager),
                f"--kubeconfig={pki.kubeconfig('kube-controller-manager')}",
                f"--authentication-kubeconfig={pki.kubeconfig('kube-controller-manager')}",
                f"--authorization-kubeconfig={pki.kubeconfig('kube-controller-manager')}",
                f"--secure-port={free_ports(1)[0]}",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.key('sa')}",
                f"--root-ca-file={pki.cert('serving-ca')}",
                f"--service-cluster-ip-range={configs.SERVICE_CIDR}",
                *common,
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(assets.kube_scheduler),
                f"--kubeconfig={pki.kubeconfig('kube-scheduler')}",
                f"--authentication-kubeconfig={pki.kubeconfig('kube-scheduler')}",
                f"--authorization-kubeconfig={pki.kubeconfig('kube-scheduler')}",
                f"--secure-port={free_ports(1)[0]}",
                *common,
            ],
        )

    def _start_node(self, assets: NodeAssets) -> None:
        layout, pki = self.layout, self._pki_files()
        # The bridge plugin needs forwarding; host.restore() puts the recorded value back.
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        with contextlib.suppress(OSError):
            Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1\n")
        # TMPDIR: containerd writes goroutine dumps (SIGUSR1) there; they belong in the node's directory.
        containerd = ["env", f"TMPDIR={layout.root}", str(assets.containerd)]
        self._spawn("containerd", [*containerd, "--config", str(layout.root / "containerd.toml")])
        self._wait("containerd", self._containerd_ready, CONTAINERD_TIMEOUT, ["containerd"])
        self.ctr("images", "import", "-", input_path=assets.pause_image_tar)
        self._spawn(
            "kubelet",
            [
                str(assets.kubelet),
                f"--config={layout.root / 'kubelet.yaml'}",
                f"--kubeconfig={pki.kubeconfig('kubelet')}",
                f"--root-dir={layout.kubelet_root}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={layout.node_ip}",
                "--v=1",
            ],
        )
        self._spawn("kube-proxy", [str(assets.kube_proxy), f"--config={layout.root / 'kube-proxy.yaml'}", "--v=1"])
        self._spawn("coredns", [str(assets.coredns), "-conf", str(layout.root / "Corefile")])

    def _wait_ready(self) -> None:
        core = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet"]
        self._wait("node Ready", self._node_ready, NODE_READY_TIMEOUT, core)
        dns = f"http://127.0.0.1:{self.layout.dns_ready_port}/ready"
        self._wait("CoreDNS ready", lambda: _http_ok(dns), DNS_TIMEOUT, ["coredns", "kube-proxy"])
        # Pods need their namespace's default ServiceAccount (made by the controller-manager).
        sa = "/api/v1/namespaces/default/serviceaccounts/default"
        self._wait("ServiceAccount default/default", lambda: self._get_ok(sa), 60.0, ["kube-controller-manager"])

    def _apiserver_ready(self) -> bool:
        return self._get_ok("/readyz")

    def _get_ok(self, path: str) -> bool:
        with self.admin_client() as client:
            return client.status(path) == 200

    def _containerd_ready(self) -> bool:
        if not self.layout.containerd_socket.exists():
            return False
        self.ctr("version", timeout=10)
        return True

    def _node_ready(self) -> bool:
        with self.admin_client() as client:
            node = client.get_json(f"/api/v1/nodes/{NODE_NAME}")
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # ------------------------------------------------------------------------------------------- stopping

    def _stop_process(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.stop()

    def _drain(self) -> None:
        """Stop the controllers, delete every pod at once and wait until the kubelet has stopped them all."""
        if "kubelet" not in self._procs or not self._procs["kubelet"].running():
            return
        self._stop_process("kube-controller-manager")
        self._stop_process("kube-scheduler")
        with self.admin_client() as client:
            namespaces = [n["metadata"]["name"] for n in client.get_json("/api/v1/namespaces")["items"]]
            for namespace in namespaces:
                client.request("DELETE", f"/api/v1/namespaces/{namespace}/pods?gracePeriodSeconds=0")
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.ctr("tasks", "ls", "-q", timeout=30).split() and time.monotonic() < deadline:
            time.sleep(0.5)

    def _kube_proxy_cleanup(self) -> None:
        assets = self._assets
        if assets is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [str(assets.kube_proxy), "--cleanup", f"--config={self.dir / 'kube-proxy.yaml'}"],
                capture_output=True,
                timeout=60,
                check=False,
            )

    def _stop_leftover_containers(self) -> None:
        """Whatever the drain left: kill the pods' processes, then their shims (they name our socket)."""
        for hierarchy in host.CGROUP_ROOT.iterdir():
            pods = hierarchy / "kubepods"
            if pods.is_dir():
                host.kill_cgroup_tree(pods)
        if "containerd" in self._procs and self._procs["containerd"].running():
            with contextlib.suppress(NodeError, subprocess.SubprocessError):
                for task in self.ctr("tasks", "ls", "-q", timeout=30).split():
                    self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", task, timeout=30)
        _kill_all(_pids_mentioning(str(self.layout.containerd_socket)))


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def sweep_stale_nodes(root: Path | None = None) -> list[Path]:
    """Clean up after nodes whose owner died without stopping them: kill, restore the machine, remove."""
    removed = lifecycle.orphaned_dirs(Path(root or tempfile.gettempdir()), DIR_PREFIX, OWNER_FILE)
    for path in removed:
        _kill_all(_pids_mentioning(str(path)))
        time.sleep(0.5)
        snapshot = path / SNAPSHOT_FILE
        if snapshot.is_file():
            with contextlib.suppress(ValueError, TypeError):
                host.restore(host.Snapshot.from_json(snapshot.read_text(encoding="utf-8")), extra_dirs=[str(path)])
        host.unmount_under([str(path)])
        shutil.rmtree(path, ignore_errors=True)
    return removed
