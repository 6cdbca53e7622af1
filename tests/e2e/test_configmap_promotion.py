"""A ConfigMap-mode experiment to promotion through real rollouts, as a user sees it.

The simulator runs as the ``canopy-backend`` Deployment; the operator (the shipped Deployment) patches
``canopy-config`` and rolls the Deployment, the real controllers replace the ReplicaSet and the pod, and the
new pod is the one that serves the new flags. Votes go through ``kubectl port-forward`` to the Service, as a
person trying it out would send them.
"""

from __future__ import annotations

import httpx
import yaml

from tests.support.node_e2e import (
    CHALLENGER,
    OPERATOR_NAMESPACE,
    Kube,
    backend_manifests,
    backend_pods,
    events,
    experiment,
    port_forward,
    replica_sets,
    sample_experiment,
    vote,
    wait_for,
    wait_phase,
)


def _serving_pod(kube: Kube, namespace: str) -> str:
    """The one ready backend pod (fails while a rollout still has two)."""
    pods = [p for p in backend_pods(kube, namespace) if not p["metadata"].get("deletionTimestamp")]
    ready = [
        p
        for p in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    if len(pods) != 1 or len(ready) != 1:
        raise ValueError(f"{len(pods)} backend pods, {len(ready)} ready")
    return str(ready[0]["metadata"]["name"])


def _flags(kube: Kube, namespace: str, pod: str) -> dict[str, object]:
    with port_forward(kube, namespace, f"pod/{pod}", 8000) as url:
        flags: dict[str, object] = httpx.get(f"{url}/feature-flags", timeout=10).json()
    return flags


def test_configmap_experiment_promotes_through_real_rollouts(installed: Kube, namespace: str) -> None:
    kube = installed
    kube.apply(backend_manifests(namespace))
    kube("-n", namespace, "rollout", "status", "deployment/canopy-backend", "--timeout=180s", timeout=200)
    first_pod = wait_for("the backend pod", lambda: _serving_pod(kube, namespace), 60)
    first_sets = set(replica_sets(kube, namespace))
    assert _flags(kube, namespace, first_pod).get("ab_testing") in (False, {"enabled": False}, None)

    kube.apply([sample_experiment(namespace)])
    wait_phase(kube, namespace, "Running", timeout=240)

    # The operator rolled the Deployment: a new ReplicaSet, a new pod, and that pod serves A/B.
    running_sets = set(replica_sets(kube, namespace))
    assert running_sets - first_sets, f"no new ReplicaSet after the config change: {running_sets}"
    running_pod = wait_for("one ready backend pod after the rollout", lambda: _serving_pod(kube, namespace), 120)
    assert running_pod != first_pod
    flags = _flags(kube, namespace, running_pod)
    assert flags.get("ab_testing") in (True, {"enabled": True}), flags

    vote(kube, namespace, challenger=25, champion=5, seed=5)
    obj = wait_phase(kube, namespace, "Concluded", timeout=300)

    status = obj["status"]
    assert status["winner"] == "challenger"
    assert status["votes"]["challengerWins"] == 25
    assert status["votes"]["championWins"] == 5
    assert len(status["promotions"]) == 1
    values = yaml.safe_load(
        kube.json("-n", namespace, "get", "configmap", "canopy-config")["data"]["canopy-config.yaml"]
    )
    assert values["summarize"]["prompt"] == CHALLENGER
    assert "prompt_b" not in values["summarize"]
    # The promotion rolled the backend once more: the pod serving the winner is another new one.
    kube("-n", namespace, "rollout", "status", "deployment/canopy-backend", "--timeout=180s", timeout=200)
    concluded_sets = set(replica_sets(kube, namespace))
    assert concluded_sets - running_sets, "the promotion did not roll the Deployment"
    final_pod = wait_for("one ready backend pod after the promotion", lambda: _serving_pod(kube, namespace), 120)
    assert final_pod not in (first_pod, running_pod)
    assert _flags(kube, namespace, final_pod).get("ab_testing") in (False, {"enabled": False}, None)
    assert len(events(kube, namespace, "Promoted")) == 1
    logs = kube("-n", OPERATOR_NAMESPACE, "logs", "deployment/canopy-operator")
    assert '"event": "prompt_promoted"' in logs
    assert experiment(kube, namespace)["status"]["phase"] == "Concluded"
