"""Install with ``kubectl apply -k manifests/``: the shipped Deployment runs the real image under the shipped RBAC."""

from __future__ import annotations

import httpx

from tests.support.node_e2e import OPERATOR_IMAGE, OPERATOR_NAMESPACE, Kube, operator_pod, port_forward

SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:canopy-operator"


def test_install_runs_the_image_as_the_shipped_deployment_and_service_account(installed: Kube) -> None:
    kube = installed
    pod = operator_pod(kube)
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["serviceAccountName"] == "canopy-operator"
    assert container["image"] == OPERATOR_IMAGE
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["CANOPY_OPERATOR_IMAGE"] == OPERATOR_IMAGE, "evaluation Jobs would use an image the node lacks"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The container really runs as the image's unprivileged user, and it is the operator that runs.
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True
    assert status["restartCount"] == 0, kube("-n", OPERATOR_NAMESPACE, "logs", pod["metadata"]["name"], "--previous")
    logs = kube("-n", OPERATOR_NAMESPACE, "logs", pod["metadata"]["name"])
    assert '"event"' in logs, logs[-2000:]
    assert "Traceback" not in logs, logs[-4000:]


def test_install_grants_the_operator_what_it_needs_and_no_more(installed: Kube) -> None:
    kube = installed

    def can(*args: str) -> bool:
        return kube("auth", "can-i", f"--as={SA}", *args, check=False).strip() == "yes"

    assert can("patch", "configmaps", "-n", "default")
    assert can("patch", "deployments.apps", "-n", "default")
    assert can("watch", "promptexperiments.canopy.genaiops.io", "--all-namespaces")
    assert not can("create", "promptexperiments.canopy.genaiops.io", "-n", "default")
    assert not can("delete", "namespaces")


def test_install_serves_metrics_from_the_pod(installed: Kube) -> None:
    pod = operator_pod(installed)["metadata"]["name"]
    with port_forward(installed, OPERATOR_NAMESPACE, f"pod/{pod}", 9090) as url:
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert "canopy_operator_experiments" in metrics
