"""A real kube-apiserver + etcd on loopback, without Docker: envtest for Python.

Used by the integration tests (one per pytest session), the benchmarks, ``canopy-devkit up`` and the local
demo. No kubelet, scheduler or controller-manager run: no garbage collection, no pods, Jobs never finish,
deleted namespaces stay Terminating.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from canopy_devkit.controlplane import lifecycle
from canopy_devkit.controlplane.assets import AssetPaths, find_assets
from canopy_devkit.controlplane.certs import CertificateAuthority, KeyPair, service_account_key_pair
from canopy_devkit.controlplane.crds import default_crd_dir, install_crds, load_crds, wait_until_served
from canopy_devkit.controlplane.kubeconfig import render_kubeconfig, write_private
from canopy_devkit.controlplane.processes import ManagedProcess, free_ports
from canopy_devkit.controlplane.rest import RestClient

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)
OPERATOR_USER = "system:serviceaccount:canopy-system:canopy-operator"
OPERATOR_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:canopy-system", "system:authenticated")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

ETCD_TIMEOUT = 30.0
APISERVER_TIMEOUT = 90.0
DEFAULT_NAMESPACE_TIMEOUT = 30.0
POLL_INTERVAL = 0.1
LOG_TAIL_LINES = 40
_PORT_RACE = re.compile(r"address already in use", re.IGNORECASE)
_fsync_flag_cache: dict[Path, bool] = {}


class ControlPlaneError(RuntimeError):
    """The control plane did not start; the message includes the tail of the relevant logs."""


class _StartFailed(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _etcd_supports_no_fsync(etcd: Path) -> bool:
    if etcd not in _fsync_flag_cache:
        out = subprocess.run([str(etcd), "--help"], capture_output=True, text=True, timeout=30, check=False)
        _fsync_flag_cache[etcd] = "--unsafe-no-fsync" in out.stdout + out.stderr
    return _fsync_flag_cache[etcd]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "user"


class ControlPlane:
    """etcd + kube-apiserver on 127.0.0.1 free ports, with RBAC and client-certificate users.

    ``start()`` returns once the API server is healthy, namespace ``default`` exists and every CRD is
    served by discovery. ``stop()`` leaves no process and no temp dir; it also runs at interpreter exit
    and on SIGTERM/SIGHUP.
    """

    def __init__(
        self,
        crd_paths: Sequence[Path] | None = None,
        assets: AssetPaths | None = None,
        *,
        start_attempts: int = 3,
        tmp_root: Path | None = None,
    ) -> None:
        self._crd_paths = list(crd_paths) if crd_paths is not None else [default_crd_dir()]
        self._assets = assets
        self._attempts = start_attempts
        self._tmp_root = tmp_root
        self._dir: Path | None = None
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._apiserver_args: list[str] = []
        self._port = 0
        self._etcd_url = ""
        self._serving_ca: CertificateAuthority | None = None
        self._client_ca: CertificateAuthority | None = None
        self._kubeconfigs: dict[tuple[str, tuple[str, ...]], Path] = {}
        self.startup_seconds: float | None = None
        """Seconds from ``start()`` to every CRD being served (set after a successful start)."""

    # ----------------------------------------------------------------- public API

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def server_url(self) -> str:
        return f"https://{HOST}:{self._port}"

    @property
    def etcd_url(self) -> str:
        return self._etcd_url

    @property
    def tmp_dir(self) -> Path:
        if self._dir is None:
            raise ControlPlaneError("the control plane is not started")
        return self._dir

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running children, by name (``etcd``, ``kube-apiserver``)."""
        return {p.name: p.pid for p in (self._etcd, self._apiserver) if p is not None and p.pid is not None}

    def start(self) -> None:
        """Start etcd and kube-apiserver, then install the CRDs; cleans up everything on failure."""
        if self._dir is not None:
            raise ControlPlaneError("the control plane is already started")
        began = time.monotonic()
        assets = self._assets or find_assets()
        lifecycle.sweep_stale_dirs(self._tmp_root)
        self._dir = lifecycle.make_temp_dir(self._tmp_root)
        lifecycle.register(self)
        try:
            self._write_pki()
            self._start_processes(assets)
            self._wait_for_default_namespace()
            self._install_crds()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        log.debug(
            json.dumps(
                {
                    "event": "control_plane_started",
                    "server": self.server_url,
                    "seconds": round(self.startup_seconds, 2),
                    "tmp_dir": str(self._dir),
                }
            )
        )

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL on timeout), and remove the temp dir. Idempotent."""
        self._stop_processes()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._kubeconfigs.clear()
        lifecycle.unregister(self)

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver only: same etcd, port, certificates and data."""
        if self._apiserver is None:
            raise ControlPlaneError("the control plane is not started")
        self._apiserver.stop()
        self._apiserver = ManagedProcess("kube-apiserver", self._apiserver_args, self.tmp_dir / "kube-apiserver.log")
        self._apiserver.start()
        try:
            self._wait_healthy(self._apiserver, self._apiserver_ready, APISERVER_TIMEOUT)
        except _StartFailed as e:
            raise ControlPlaneError(str(e)) from None

    def user_kubeconfig(self, user: str, groups: Sequence[str]) -> Path:
        """A kubeconfig authenticating as ``user`` in ``groups`` (client cert: CN=user, O=groups)."""
        key = (user, tuple(groups))
        if key not in self._kubeconfigs:
            client = self._client_pair(user, groups)
            text = render_kubeconfig(self.server_url, self._serving_ca_pem(), user, client)
            digest = hashlib.sha256("\n".join(groups).encode()).hexdigest()[:8]
            path = self.tmp_dir / "kubeconfigs" / f"{_slug(user)}-{digest}.kubeconfig"
            path.parent.mkdir(exist_ok=True)
            self._kubeconfigs[key] = write_private(path, text)
        return self._kubeconfigs[key]

    def admin_kubeconfig(self) -> Path:
        """Kubeconfig of user ``admin`` in ``system:masters`` (bypasses RBAC)."""
        return self.user_kubeconfig(ADMIN_USER, ADMIN_GROUPS)

    def operator_kubeconfig(self) -> Path:
        """Kubeconfig of the operator's ServiceAccount user; it can do only what RBAC grants it."""
        return self.user_kubeconfig(OPERATOR_USER, OPERATOR_GROUPS)

    def admin_client(self) -> RestClient:
        """A new synchronous REST client authenticated as ``admin``; the caller closes it."""
        pki = self.tmp_dir / "pki"
        return RestClient(self.server_url, pki / "serving-ca.crt", pki / "admin.crt", pki / "admin.key")

    # ----------------------------------------------------------------- start-up steps

    def _serving_ca_pem(self) -> bytes:
        assert self._serving_ca is not None
        return self._serving_ca.cert_pem

    def _client_pair(self, user: str, groups: Sequence[str]) -> KeyPair:
        assert self._client_ca is not None
        return self._client_ca.issue_client(user, groups)

    def _write_pki(self) -> None:
        pki = self.tmp_dir / "pki"
        pki.mkdir()
        self._serving_ca = CertificateAuthority.create("canopy-envtest-serving-ca")
        self._client_ca = CertificateAuthority.create("canopy-envtest-client-ca")
        serving = self._serving_ca.issue_serving(["localhost", HOST])
        sa = service_account_key_pair()
        admin = self._client_pair(ADMIN_USER, ADMIN_GROUPS)
        files: dict[str, bytes] = {
            "serving-ca.crt": self._serving_ca.cert_pem,
            "serving.crt": serving.cert_pem,
            "serving.key": serving.key_pem,
            "client-ca.crt": self._client_ca.cert_pem,
            "sa.pub": sa.cert_pem,
            "sa.key": sa.key_pem,
            "admin.crt": admin.cert_pem,
            "admin.key": admin.key_pem,
        }
        for name, data in files.items():
            write_private(pki / name, data)

    def _etcd_args(self, etcd: Path, client_port: int, peer_port: int) -> list[str]:
        peer = f"http://{HOST}:{peer_port}"
        args = [
            str(etcd),
            "--name=canopy-envtest",
            f"--data-dir={self.tmp_dir / 'etcd-data'}",
            f"--listen-client-urls={self._etcd_url}",
            f"--advertise-client-urls={self._etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=canopy-envtest={peer}",
        ]
        if _etcd_supports_no_fsync(etcd):
            args.append("--unsafe-no-fsync=true")
        return args

    def _kube_apiserver_args(self, apiserver: Path) -> list[str]:
        pki = self.tmp_dir / "pki"
        cert_dir = self.tmp_dir / "apiserver-certs"
        cert_dir.mkdir(exist_ok=True)
        return [
            str(apiserver),
            f"--etcd-servers={self._etcd_url}",
            f"--cert-dir={cert_dir}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--secure-port={self._port}",
            f"--bind-address={HOST}",
            f"--advertise-address={HOST}",
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server_url}/",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--client-ca-file={pki / 'client-ca.crt'}",
        ]

    def _start_processes(self, assets: AssetPaths) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                self._start_once(assets)
                return
            except _StartFailed as e:
                self._stop_processes()
                if not e.retryable or attempt == self._attempts:
                    raise ControlPlaneError(f"control plane did not start (attempt {attempt}): {e}") from None
                log.debug(json.dumps({"event": "control_plane_start_retried", "attempt": attempt}))

    def _start_once(self, assets: AssetPaths) -> None:
        self._port, client_port, peer_port = free_ports(3)
        self._etcd_url = f"http://{HOST}:{client_port}"
        shutil.rmtree(self.tmp_dir / "etcd-data", ignore_errors=True)
        self._etcd = ManagedProcess(
            "etcd", self._etcd_args(assets.etcd, client_port, peer_port), self.tmp_dir / "etcd.log"
        )
        self._etcd.start()
        self._wait_healthy(self._etcd, self._etcd_ready, ETCD_TIMEOUT)
        self._apiserver_args = self._kube_apiserver_args(assets.kube_apiserver)
        self._apiserver = ManagedProcess("kube-apiserver", self._apiserver_args, self.tmp_dir / "kube-apiserver.log")
        self._apiserver.start()
        self._wait_healthy(self._apiserver, self._apiserver_ready, APISERVER_TIMEOUT)

    def _stop_processes(self) -> None:
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()
        self._apiserver = self._etcd = None

    def _etcd_ready(self) -> bool:
        try:
            return httpx.get(f"{self._etcd_url}/health", timeout=2.0, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    def _apiserver_ready(self) -> bool:
        with self.admin_client() as client:
            return client.status("/healthz") == 200

    def _wait_healthy(self, proc: ManagedProcess, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            code = proc.exit_code()
            if code is not None or time.monotonic() >= deadline:
                tail = proc.tail(LOG_TAIL_LINES)
                what = f"exited with code {code}" if code is not None else f"not healthy after {timeout:.0f}s"
                raise _StartFailed(
                    f"{proc.name} {what}; last lines of {proc.log_path}:\n{tail}",
                    retryable=bool(_PORT_RACE.search(tail)),
                )
            time.sleep(POLL_INTERVAL)

    def _wait_for_default_namespace(self) -> None:
        deadline = time.monotonic() + DEFAULT_NAMESPACE_TIMEOUT
        with self.admin_client() as client:
            while client.status("/api/v1/namespaces/default") != 200:
                if time.monotonic() >= deadline:
                    raise ControlPlaneError(self._with_logs("namespace default did not appear"))
                time.sleep(POLL_INTERVAL)

    def _install_crds(self) -> None:
        crds = load_crds(self._crd_paths)
        with self.admin_client() as client:
            try:
                install_crds(client, crds)
                wait_until_served(client, crds)
            except (RuntimeError, TimeoutError) as e:
                raise ControlPlaneError(self._with_logs(str(e))) from e

    def _with_logs(self, message: str) -> str:
        procs = [p for p in (self._apiserver, self._etcd) if p is not None]
        tails = "".join(f"\n--- last lines of {p.log_path}:\n{p.tail(LOG_TAIL_LINES)}" for p in procs)
        return message + tails
