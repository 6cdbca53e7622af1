"""The e2e tier's cluster and what a user does with it: kubectl, the images, the install, the backend.

Where the cluster comes from (first match):

- ``E2E_KUBECONFIG``: an existing cluster (kind, a laptop's cluster). The images are loaded with the command
  in ``E2E_IMAGE_LOAD`` (``{archive}`` is replaced by the image tarball's path), e.g.
  ``kind load image-archive {archive} --name canopy-e2e``; without it the images must already be there.
- ``E2E_KIND_CLUSTER``: a kind cluster of that name, created when missing (deleted afterwards unless
  ``E2E_KEEP_CLUSTER=1``); images loaded with ``kind load image-archive``.
- otherwise a real node on this machine (:class:`canopy_devkit.node.Node`; root, ``make node-assets``).

Under ``CI=true`` a cluster that cannot be had fails the tier; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import yaml

from canopy_devkit.kubelet import RENDERED_VALUES
from canopy_devkit.voters import fixed_picks, post_votes
from tests.support import openshift
from tests.support.argocd import CHECKSUM_ANNOTATION, render
from tests.support.fake_judge import FakeJudge
from tests.support.gitserver import git

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_IMAGE = os.environ.get("E2E_IMAGE", "canopy-operator:e2e")
SIMULATOR_IMAGE = os.environ.get("E2E_SIMULATOR_IMAGE", "canopy-simulator:e2e")
OPERATOR_NAMESPACE = "canopy-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=canopy-operator"
BACKEND_LABELS = {"app": "canopy-backend"}
CHALLENGER = "Provide a brief, concise summary:\n"
KEY = "canopy-config.yaml"

T = TypeVar("T")


class CommandFailed(AssertionError):
    """A command a user would run failed; the message has its output."""


def run(*args: str, input: str | None = None, timeout: float = 600, check: bool = True) -> str:
    result = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise CommandFailed(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr}")
    return result.stdout


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 2.0) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail naming ``what`` and the last state."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (CommandFailed, KeyError, ValueError) as e:
            last_error = str(e)[-1500:]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not within {timeout:.0f}s{'; last error: ' + last_error if last_error else ''}"
            )
        time.sleep(interval)


@dataclass
class Kube:
    """kubectl against one cluster (the admin's kubeconfig)."""

    kubeconfig: Path
    cache_dir: Path

    def __call__(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        env_args = [f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}"]
        return run("kubectl", *env_args, *args, input=input, check=check, timeout=timeout)

    def json(self, *args: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self(*args, "-o", "json"))
        return loaded

    def apply(self, docs: list[dict[str, Any]]) -> str:
        return self("apply", "-f", "-", input=yaml.safe_dump_all(docs, sort_keys=False))


@dataclass
class Cluster:
    """A cluster the tier runs on, and how images reach it."""

    kube: Kube
    kind: str
    load_images: Callable[[Path], None]
    node: Any = None
    """The :class:`canopy_devkit.node.Node` when the tier started one (None on an existing cluster)."""
    notes: list[str] = field(default_factory=list)
    restricted_uid: int | None = None
    """The UID every pod gets when the tier plays OpenShift's restricted-v2 (:mod:`tests.support.openshift`)."""


# ------------------------------------------------------------------------------------------------ install


def install_overlay(directory: Path) -> Path:
    """A kustomize overlay over the shipped ``manifests/``: the local images, never pulled.

    The shipped base copies the operator's image into ``CANOPY_OPERATOR_IMAGE`` (the evaluation Jobs' image)
    with a ``replacements`` entry that runs inside the base, before an overlay's ``images``; the overlay
    repeats it so the Jobs use the image the operator runs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name, _, tag = OPERATOR_IMAGE.rpartition(":")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO_ROOT / "manifests", directory)],
        "images": [{"name": "canopy-operator", "newName": name, "newTag": tag}],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": "canopy-operator"},
                "patch": yaml.safe_dump(
                    [
                        {
                            "op": "replace",
                            "path": "/spec/template/spec/containers/0/imagePullPolicy",
                            "value": "Never",
                        }
                    ]
                ),
            }
        ],
        "replacements": [
            {
                "source": {
                    "kind": "Deployment",
                    "name": "canopy-operator",
                    "fieldPath": "spec.template.spec.containers.[name=operator].image",
                },
                "targets": [
                    {
                        "select": {"kind": "Deployment", "name": "canopy-operator"},
                        "fieldPaths": [
                            "spec.template.spec.containers.[name=operator].env.[name=CANOPY_OPERATOR_IMAGE].value"
                        ],
                    }
                ],
            }
        ],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False), encoding="utf-8")
    return directory


def pinned_pod(namespace: str, uid: int) -> dict[str, Any]:
    """A pod that pins ``runAsUser``, as the project's manifests and Jobs used to (restricted-v2 refuses it)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pinned-uid", "namespace": namespace},
        "spec": {
            "securityContext": {"runAsUser": uid, "runAsNonRoot": True},
            "containers": [{"name": "c", "image": OPERATOR_IMAGE, "imagePullPolicy": "Never"}],
        },
    }


def play_restricted_v2(cluster: Cluster) -> None:
    """Install the restricted-v2 emulation and wait until it refuses a pinned UID (policies load lazily)."""
    uid = openshift.draw_uid()
    cluster.kube.apply(openshift.policies(uid))

    def refused() -> bool:
        out = subprocess.run(
            ["kubectl", f"--kubeconfig={cluster.kube.kubeconfig}", "create", "--dry-run=server", "-f", "-"],
            input=json.dumps(pinned_pod("default", 65532)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return out.returncode != 0 and openshift.REFUSAL in out.stderr

    wait_for("the restricted-v2 emulation to refuse a pinned UID", refused, 60, interval=1.0)
    cluster.restricted_uid = uid
    cluster.notes.append(f"pods run as UID {uid} (restricted-v2 emulation)")


def operator_pod(kube: Kube) -> dict[str, Any]:
    """The one running, ready operator pod (fails when there is none or several)."""
    pods: list[dict[str, Any]] = kube.json("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", OPERATOR_SELECTOR)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"]
    ready = [p for p in live if _pod_ready(p)]
    if len(ready) != 1:
        raise ValueError(f"{len(ready)} ready operator pods: {[p['metadata']['name'] for p in pods]}")
    return ready[0]


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


# ------------------------------------------------------------------------------------------------ backend


def backend_manifests(namespace: str, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The chart's shape in ``namespace``: ConfigMap ``canopy-config``, Deployment and Service ``canopy-backend``.

    The Deployment runs the simulator image; its pods mount the ConfigMap, so a new pod serves new flags.
    """
    ns_labels = labels or {}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": ns_labels}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "canopy-config", "namespace": namespace},
            "data": {"canopy-config.yaml": RENDERED_VALUES},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "canopy-backend", "namespace": namespace, "labels": BACKEND_LABELS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": BACKEND_LABELS},
                "template": {
                    "metadata": {"labels": BACKEND_LABELS, "annotations": {"checksum/config": "initial"}},
                    "spec": {
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [
                            {
                                "name": "backend",
                                "image": SIMULATOR_IMAGE,  # entrypoint: canopy-devkit simulate
                                "imagePullPolicy": "Never",
                                "args": ["--host", "0.0.0.0", "--port", "8000"],  # noqa: S104 - a pod serves its Service
                                "env": [{"name": "CANOPY_CONFIG_PATH", "value": "/canopy/canopy-config.yaml"}],
                                "ports": [{"containerPort": 8000}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/feature-flags", "port": 8000},
                                    "periodSeconds": 2,
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/canopy"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "canopy-config"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "canopy-backend", "namespace": namespace},
            "spec": {"selector": BACKEND_LABELS, "ports": [{"port": 8000, "targetPort": 8000}]},
        },
    ]


def sample_experiment(namespace: str, **analysis: Any) -> dict[str, Any]:
    """``manifests/samples/configmap-experiment.yaml`` in ``namespace`` with a short poll interval.

    ``spec.backend.url`` stays the sample's ``http://canopy-backend:8000``: the operator resolves it to the
    Service of the experiment's own namespace.
    """
    body: dict[str, Any] = yaml.safe_load((REPO_ROOT / "manifests/samples/configmap-experiment.yaml").read_text())
    body["metadata"]["namespace"] = namespace
    body["spec"]["analysis"].update({"interval": "5s", **analysis})
    return body


def experiment(kube: Kube, namespace: str, name: str = "concise-summaries") -> dict[str, Any]:
    return kube.json("-n", namespace, "get", "promptexperiment", name)


def wait_phase(
    kube: Kube, namespace: str, phase: str, timeout: float, name: str = "concise-summaries"
) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal last
        last = experiment(kube, namespace, name)
        status = last.get("status") or {}
        if status.get("phase") == "Degraded" and phase != "Degraded":
            raise AssertionError(f"{namespace}/{name} is Degraded: {status.get('message')}; {status.get('conditions')}")
        return last if status.get("phase") == phase else None

    try:
        return wait_for(f"{namespace}/{name} reaching phase {phase}", probe, timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; status: {json.dumps(last.get('status'), default=str)[:3000]}") from None


def backend_pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in BACKEND_LABELS.items())
    items: list[dict[str, Any]] = kube.json("-n", namespace, "get", "pods", "-l", selector)["items"]
    return items


def replica_sets(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in BACKEND_LABELS.items())
    items = kube.json("-n", namespace, "get", "replicasets", "-l", selector)["items"]
    return {rs["metadata"]["name"]: rs for rs in items}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def port_forward(kube: Kube, namespace: str, target: str, remote_port: int) -> Iterator[str]:
    """``kubectl port-forward`` to ``target`` (e.g. ``pod/x`` or ``svc/y``); yields ``http://127.0.0.1:<port>``."""
    port = free_port()
    command = ["kubectl", f"--kubeconfig={kube.kubeconfig}", "-n", namespace, "port-forward", target]
    command += [f"{port}:{remote_port}", "--address=127.0.0.1"]
    with tempfile.TemporaryFile() as errors:
        forward = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            deadline = time.monotonic() + 30
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if forward.poll() is not None or time.monotonic() > deadline:
                    errors.seek(0)
                    raise AssertionError(f"kubectl port-forward {target} did not listen: {errors.read().decode()}")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}"
        finally:
            forward.terminate()
            try:
                forward.wait(timeout=10)
            except subprocess.TimeoutExpired:
                forward.kill()
                forward.wait(timeout=10)


def vote(kube: Kube, namespace: str, challenger: int, champion: int, seed: int) -> None:
    """Users vote in the backend's A/B flow (``/summarize/ab`` then ``/feedback/ab``) through a port-forward."""
    with port_forward(kube, namespace, "svc/canopy-backend", 8000) as url:
        picks = fixed_picks(challenger=challenger, champion=champion, ties=0)
        asyncio.run(post_votes(url, picks, seed=seed, ask_answers=True))


def events(kube: Kube, namespace: str, reason: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.json("-n", namespace, "get", "events")["items"]
    return [e for e in items if e.get("reason") == reason]


@contextlib.contextmanager
def serve_judge(judge: FakeJudge, host: str) -> Iterator[str]:
    """Serve ``judge`` (its answers, its request log) on ``host`` so pods can reach it; yields its ``/v1`` URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            status, answer = judge.answer(self.path, body, self.headers.get("Authorization"))
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="e2e-judge", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class ArgoStandIn:
    """Argo CD's automated sync of one Application, played with the admin's kubectl: every new commit on
    ``branch`` of the bare repository is rendered over the chart's defaults (:func:`tests.support.argocd.render`)
    into ConfigMap ``canopy-config``, and the Deployment's ``checksum/config`` annotation is set to the rendered
    text's sha256, so the real Deployment controller rolls the backend. Nothing else writes the ConfigMap."""

    def __init__(self, kube: Kube, namespace: str, bare: Path, values_file: str, branch: str = "main") -> None:
        self.kube, self.namespace, self.bare = kube, namespace, bare
        self.values_file, self.branch = values_file, branch
        self.synced: list[str] = []
        """Revisions synced, oldest first."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="e2e-argo", daemon=True)
        self.error: BaseException | None = None

    def sync(self) -> bool:
        sha = git("rev-parse", f"refs/heads/{self.branch}", cwd=self.bare).strip()
        if self.synced and self.synced[-1] == sha:
            return False
        rendered = render(git("show", f"{sha}:{self.values_file}", cwd=self.bare))
        configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "canopy-config"}}
        self.kube("-n", self.namespace, "apply", "-f", "-", input=json.dumps(configmap | {"data": {KEY: rendered}}))
        checksum = hashlib.sha256(rendered.encode()).hexdigest()
        patch = {"spec": {"template": {"metadata": {"annotations": {CHECKSUM_ANNOTATION: checksum}}}}}
        self.kube("-n", self.namespace, "patch", "deployment", "canopy-backend", "-p", json.dumps(patch))
        self.synced.append(sha)
        return True

    def _follow(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sync()
            except (CommandFailed, RuntimeError) as e:  # the test reads it: a sync that fails is a failed test
                self.error = e
                return

    def __enter__(self) -> ArgoStandIn:
        self.sync()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def docker_available() -> str | None:
    """None when Docker and kind can be used, else why not."""
    for tool in ("docker", "kind"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60, check=False)
    if info.returncode != 0:
        return "the Docker engine is not reachable"
    return None
