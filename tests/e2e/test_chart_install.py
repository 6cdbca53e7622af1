"""The Helm chart installed the way a namespace admin on the course's cluster would: ``installScope=Namespace``,
``--skip-crds`` (a cluster admin installed the CRD), the operator watching its own namespace only, and an
experiment in that namespace carried to promotion through real rollouts.

While it runs, the shipped kustomize install is scaled to zero (it watches every namespace, so two operators
would act on the experiment); it is scaled back afterwards.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.node_e2e import (
    CHALLENGER,
    OPERATOR_IMAGE,
    OPERATOR_NAMESPACE,
    REPO_ROOT,
    Cluster,
    Kube,
    backend_manifests,
    events,
    operator_pod,
    run,
    sample_experiment,
    vote,
    wait_for,
    wait_phase,
)

RELEASE = "canopy"


def _helm_binary() -> str:
    if helm := os.environ.get("CANOPY_HELM"):
        return helm
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "helm-assets.sh")], capture_output=True, text=True, timeout=3600, check=False
    )
    assert out.returncode == 0, f"hack/helm-assets.sh failed:\n{out.stderr[-3000:]}"
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def shipped_operator_paused(installed: Kube) -> Iterator[None]:
    installed("-n", OPERATOR_NAMESPACE, "scale", "deployment/canopy-operator", "--replicas=0")
    selector = "app.kubernetes.io/name=canopy-operator"
    wait_for(
        "the shipped operator pod to stop",
        lambda: not installed.json("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", selector)["items"],
        120,
    )
    try:
        yield
    finally:
        installed("-n", OPERATOR_NAMESPACE, "scale", "deployment/canopy-operator", "--replicas=1")
        wait_for("the shipped operator to be back", lambda: operator_pod(installed), 180)


def test_chart_installed_in_one_namespace_runs_an_experiment_to_promotion(
    cluster: Cluster, installed: Kube, namespace: str, shipped_operator_paused: None
) -> None:
    kube = installed
    helm = [_helm_binary(), f"--kubeconfig={kube.kubeconfig}", "--namespace", namespace]
    kube.apply(backend_manifests(namespace))
    repository, _, tag = OPERATOR_IMAGE.rpartition(":")
    values = {
        "installScope": "Namespace",
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "logLevel": "DEBUG",
    }
    values_file = Path(kube.cache_dir).parent / f"{namespace}-values.yaml"
    values_file.write_text(yaml.safe_dump(values), encoding="utf-8")
    chart = str(REPO_ROOT / "charts" / "canopy-operator")
    install = ["install", RELEASE, chart, "--skip-crds", "-f", str(values_file), "--wait", "--timeout=180s"]
    run(*helm, *install, timeout=240)
    try:
        deployment = f"deployment/{RELEASE}-canopy-operator"
        kube("-n", namespace, "rollout", "status", deployment, "--timeout=180s", timeout=200)
        pods = kube.json("-n", namespace, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
        assert len(pods) == 1
        if cluster.restricted_uid is not None:
            assert pods[0]["spec"]["securityContext"]["runAsUser"] == cluster.restricted_uid
        # A Role in the namespace, nothing cluster-wide.
        assert kube("-n", namespace, "get", "role", f"{RELEASE}-canopy-operator", "-o", "name")
        assert not kube("get", "clusterrole", f"{RELEASE}-canopy-operator", "--ignore-not-found", "-o", "name")

        kube("-n", namespace, "rollout", "status", "deployment/canopy-backend", "--timeout=180s", timeout=200)
        kube.apply([sample_experiment(namespace)])
        wait_phase(kube, namespace, "Running", timeout=240)
        vote(kube, namespace, challenger=25, champion=5, seed=21)
        obj = wait_phase(kube, namespace, "Concluded", timeout=300)

        status = obj["status"]
        assert status["winner"] == "challenger"
        assert len(status["promotions"]) == 1
        values_text = kube.json("-n", namespace, "get", "configmap", "canopy-config")["data"]["canopy-config.yaml"]
        assert yaml.safe_load(values_text)["summarize"]["prompt"] == CHALLENGER
        assert len(events(kube, namespace, "Promoted")) == 1
        logs = kube("-n", namespace, "logs", deployment)
        assert '"event": "prompt_promoted"' in logs
    finally:
        run(*helm, "uninstall", RELEASE, "--wait", "--timeout=120s", timeout=180, check=False)
