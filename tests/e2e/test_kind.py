"""End to end on a kind cluster: the real image, installed with the shipped manifests, runs a full experiment.

``make e2e`` (``hack/e2e.sh``). Needs Docker and kind; skips with the reason where either is missing.
The simulator runs as the ``canopy-backend`` Deployment (the Dockerfile's ``simulator`` target: the devkit on
top of the operator's wheel), so a promotion really rolls a pod. Environment: ``E2E_CLUSTER`` (default
``canopy-e2e``), ``E2E_KEEP_CLUSTER=1`` to keep the cluster afterwards (a kept cluster is reused by the next
run), ``E2E_IMAGE`` (default ``canopy-operator:e2e``), ``E2E_SIMULATOR_IMAGE`` (default
``canopy-simulator:e2e``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canopy_devkit.kubelet import RENDERED_VALUES
from canopy_devkit.voters import fixed_picks, post_votes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("E2E_CLUSTER", "canopy-e2e")
IMAGE = os.environ.get("E2E_IMAGE", "canopy-operator:e2e")
SIMULATOR_IMAGE = os.environ.get("E2E_SIMULATOR_IMAGE", "canopy-simulator:e2e")
NAMESPACE = "canopy-e2e"
CHALLENGER = "Provide a brief, concise summary:\n"


def _missing_tools() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60, check=False)
    if info.returncode != 0:
        return f"the Docker engine is not reachable: {info.stderr.strip().splitlines()[-1:]}"
    return None


def run(*args: str, input: str | None = None, timeout: float = 600, check: bool = True) -> str:
    result = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


class Kube:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return run("kubectl", f"--kubeconfig={self.kubeconfig}", *args, input=input, check=check)

    def json(self, *args: str) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self(*args, "-o", "json"))
        return loaded


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    reason = _missing_tools()
    if reason:
        pytest.skip(f"kind e2e needs Docker and kind: {reason}")
    existing = run("kind", "get", "clusters", check=False).split()
    if CLUSTER not in existing:
        run("kind", "create", "cluster", "--name", CLUSTER, "--wait", "180s", timeout=900)
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    kubeconfig.write_text(run("kind", "get", "kubeconfig", "--name", CLUSTER), encoding="utf-8")
    try:
        yield Kube(kubeconfig)
    finally:
        if os.environ.get("E2E_KEEP_CLUSTER") != "1":
            run("kind", "delete", "cluster", "--name", CLUSTER, check=False)


@pytest.fixture(scope="module")
def installed(kube: Kube) -> Kube:
    """The images built and loaded into kind, then ``kubectl apply -k manifests/`` with the operator's."""
    run("docker", "build", "-t", IMAGE, str(ROOT), timeout=1800)
    run("docker", "build", "--target", "simulator", "-t", SIMULATOR_IMAGE, str(ROOT), timeout=1800)
    run("kind", "load", "docker-image", IMAGE, SIMULATOR_IMAGE, "--name", CLUSTER, timeout=600)
    rendered = run("kubectl", "kustomize", str(ROOT / "manifests"))
    kube("apply", "-f", "-", input=rendered.replace("canopy-operator:0.1.0", IMAGE))
    kube("-n", "canopy-system", "rollout", "status", "deployment/canopy-operator", "--timeout=180s")
    return kube


def backend_manifests() -> str:
    """The chart's shape: ConfigMap, Deployment (the simulator image) and Service."""
    labels = {"app": "canopy-backend"}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "canopy-config", "namespace": NAMESPACE},
            "data": {"canopy-config.yaml": RENDERED_VALUES},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "canopy-backend", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels, "annotations": {"checksum/config": "initial"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "backend",
                                "image": SIMULATOR_IMAGE,  # entrypoint: canopy-devkit simulate
                                "args": ["--host", "0.0.0.0", "--port", "8000"],  # noqa: S104 - a pod serves its Service
                                "env": [{"name": "CANOPY_CONFIG_PATH", "value": "/canopy/canopy-config.yaml"}],
                                "ports": [{"containerPort": 8000}],
                                "readinessProbe": {"httpGet": {"path": "/feature-flags", "port": 8000}},
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
            "metadata": {"name": "canopy-backend", "namespace": NAMESPACE},
            "spec": {"selector": labels, "ports": [{"port": 8000, "targetPort": 8000}]},
        },
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def experiment() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((ROOT / "manifests/samples/configmap-experiment.yaml").read_text())
    body["metadata"]["namespace"] = NAMESPACE
    body["spec"]["backend"]["url"] = f"http://canopy-backend.{NAMESPACE}.svc:8000"
    body["spec"]["analysis"]["interval"] = "5s"
    return body


def wait_phase(kube: Kube, phase: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        obj = kube.json("-n", NAMESPACE, "get", "pexp", "concise-summaries")
        if (obj.get("status") or {}).get("phase") == phase:
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(f"phase {phase} not reached in {timeout:.0f}s; status: {obj.get('status')}")
        time.sleep(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vote_through_port_forward(kube: Kube, challenger: int, champion: int) -> None:
    port = free_port()
    command = ["kubectl", f"--kubeconfig={kube.kubeconfig}", "-n", NAMESPACE, "port-forward"]
    command += ["svc/canopy-backend", f"{port}:8000", "--address=127.0.0.1"]
    forward = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        picks = fixed_picks(challenger=challenger, champion=champion, ties=0)
        asyncio.run(post_votes(f"http://127.0.0.1:{port}", picks, seed=5, ask_answers=True))
    finally:
        forward.terminate()
        forward.wait(timeout=30)


def test_kind_install_runs_an_experiment_to_promotion(installed: Kube) -> None:
    kube = installed
    kube("apply", "-f", "-", input=backend_manifests())
    kube("-n", NAMESPACE, "rollout", "status", "deployment/canopy-backend", "--timeout=180s")
    kube("apply", "-f", "-", input=yaml.safe_dump(experiment()))

    wait_phase(kube, "Running", timeout=240)
    vote_through_port_forward(kube, challenger=25, champion=5)
    obj = wait_phase(kube, "Concluded", timeout=300)

    assert obj["status"]["winner"] == "challenger"
    config = kube.json("-n", NAMESPACE, "get", "configmap", "canopy-config")
    values = yaml.safe_load(config["data"]["canopy-config.yaml"])
    assert values["summarize"]["prompt"] == CHALLENGER
    assert "prompt_b" not in values["summarize"]
    logs = kube("-n", "canopy-system", "logs", "deployment/canopy-operator")
    assert '"event": "prompt_promoted"' in logs
