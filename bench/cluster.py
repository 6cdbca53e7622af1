"""The real pieces a benchmark drives: the control plane with the shipped RBAC, and the operator as a process.

The operator runs as ``canopy-operator run --all-namespaces`` (what the shipped Deployment runs) in its own
process, authenticated as its ServiceAccount user bound only to ``manifests/rbac/clusterrole.yaml``, so its
CPU and memory can be read from /proc and nothing of the benchmark shares its event loop. The bare-Kopf floor
(``floor_operator.py``) runs the same way under ``kopf run`` (``FloorProcess``).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
import yaml

from canopy_devkit.controlplane import ControlPlane
from canopy_devkit.controlplane.processes import free_ports
from common import REPO_ROOT

CLUSTERROLE = REPO_ROOT / "manifests" / "rbac" / "clusterrole.yaml"
OPERATOR_NAMESPACE = "canopy-system"
OPERATOR_SA = "canopy-operator"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"})
_METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

RequestKey = tuple[str, str, str, str]
"""(verb, resource, subresource, code) of apiserver_request_total."""


def apply_operator_rbac(plane: ControlPlane) -> None:
    """The shipped ClusterRole(s), bound to ServiceAccount canopy-system/canopy-operator (the operator's user)."""
    with plane.admin_client() as admin:
        admin.create_or_replace(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}, "namespaces"
        )
        admin.create_or_replace(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE},
            },
            "serviceaccounts",
        )
        roles = [doc for doc in yaml.safe_load_all(CLUSTERROLE.read_text(encoding="utf-8")) if doc]
        for role in roles:
            admin.create_or_replace(role, "clusterroles")
            name = role["metadata"]["name"]
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"bench-{name}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE}],
            }
            admin.create_or_replace(binding, "clusterrolebindings")


def create_namespace(plane: ControlPlane, name: str) -> None:
    with plane.admin_client() as admin:
        admin.create_or_replace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, "namespaces")


def apiserver_requests(plane: ControlPlane) -> collections.Counter[RequestKey]:
    """``apiserver_request_total`` summed over scopes, by (verb, resource, subresource, code)."""
    with plane.admin_client() as admin:
        response = admin.request("GET", "/metrics")
    response.raise_for_status()
    counts: collections.Counter[RequestKey] = collections.Counter()
    for line in response.text.splitlines():
        match = _METRIC.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        verb, resource, sub, code = (labels.get(k, "") for k in ("verb", "resource", "subresource", "code"))
        key = (verb, resource, sub, code)
        counts[key] += int(float(match["value"]))
    return counts


_WATCHES = re.compile(r"^apiserver_longrunning_requests\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def open_watches(plane: ControlPlane, resource: str) -> int:
    """How many WATCH requests on ``resource`` the API server is serving now (``apiserver_longrunning_requests``)."""
    with plane.admin_client() as admin:
        response = admin.request("GET", "/metrics")
    response.raise_for_status()
    total = 0
    for line in response.text.splitlines():
        match = _WATCHES.match(line)
        if match is not None:
            labels = dict(_LABEL.findall(match["labels"]))
            if labels.get("verb") == "WATCH" and labels.get("resource") == resource:
                total += int(float(match["value"]))
    return total


def wait_watching(plane: ControlPlane, resource: str, timeout: float = 60.0) -> float:
    """Wait until someone watches ``resource`` (the subject's Kopf, before the harness opens its own watches);
    return the seconds waited. Kopf's liveness answers before its watch streams are open."""
    began = time.monotonic()
    while open_watches(plane, resource) < 1:
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"nobody watches {resource} after {timeout:g}s")
        time.sleep(0.1)
    return time.monotonic() - began


class OperatorProcess:
    """``canopy-operator run --all-namespaces`` as the operator's user; ready when Kopf's liveness answers."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        log_level: str = "INFO",
        profile: Path | None = None,
        heap: Path | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.log_level = log_level
        self.profile = profile
        """Run the operator under cProfile, writing its statistics here on exit."""
        self.heap = heap
        """Run the operator under tracemalloc (``bench/heap_snapshot.py``); :meth:`heap_snapshot` writes here."""
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.liveness = ""

    @property
    def pid(self) -> int:
        assert self.process is not None, "the operator is not running"
        return self.process.pid

    def start(self, ready_timeout: float = 120.0) -> None:
        (port,) = free_ports(1)
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": str(REPO_ROOT / "operator"),
            "CANOPY_BACKEND_HOSTS": "127.0.0.1",  # the simulated backends serve on loopback
        }
        python = str(REPO_ROOT / ".venv" / "bin" / "python")
        profiling = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        if self.heap is not None:
            profiling = [str(Path(__file__).with_name("heap_snapshot.py")), str(self.heap)]
        command = [python, *profiling, *self.arguments()]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while not self._live():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not become live; see {self.log_path}")
            time.sleep(0.2)

    def arguments(self) -> list[str]:
        """What follows ``python`` on the command line."""
        return [
            "-m",
            "canopy_operator.cli",
            "run",
            "--all-namespaces",
            "--liveness",
            self.liveness,
            "--log-level",
            self.log_level,
        ]

    def heap_snapshot(self, timeout: float = 300.0) -> None:
        """Ask the traced operator for a heap snapshot and wait until it is written (``heap`` set only)."""
        if self.heap is None or self.process is None:
            return
        self.heap.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not self.heap.exists() and time.monotonic() < deadline:
            time.sleep(0.5)

    def _live(self) -> bool:
        try:
            return httpx.get(self.liveness, timeout=2.0, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class FloorProcess(OperatorProcess):
    """``bench/floor_operator.py`` under ``kopf run``, run exactly like the operator (same user, flags and readiness).

    Kopf's own CLI: ``--all-namespaces``, ``--standalone`` (the operator runs Kopf standalone too), the same
    liveness endpoint, log level INFO (Kopf's default, as the operator's) and JSON lines, as the operator logs.
    """

    def arguments(self) -> list[str]:
        if self.log_level != "INFO":
            raise ValueError("the floor runs at Kopf's default log level, INFO")
        floor = str(REPO_ROOT / "bench" / "floor_operator.py")
        return ["-m", "kopf", "run", "--all-namespaces", "--standalone", "--liveness", self.liveness,
                "--log-format=json", floor]  # fmt: skip
