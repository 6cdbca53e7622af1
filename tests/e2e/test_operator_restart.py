"""The operator pod deleted in the middle of a test: the Deployment's new pod finishes it exactly once."""

from __future__ import annotations

from tests.support.node_e2e import (
    OPERATOR_NAMESPACE,
    Kube,
    backend_manifests,
    events,
    operator_pod,
    sample_experiment,
    vote,
    wait_for,
    wait_phase,
)


def test_operator_pod_deleted_mid_test_promotes_once_and_loses_no_vote(installed: Kube, namespace: str) -> None:
    kube = installed
    kube.apply(backend_manifests(namespace))
    kube("-n", namespace, "rollout", "status", "deployment/canopy-backend", "--timeout=180s", timeout=200)
    kube.apply([sample_experiment(namespace)])
    wait_phase(kube, namespace, "Running", timeout=240)

    vote(kube, namespace, challenger=8, champion=2, seed=11)
    wait_for(
        "the operator to count the first votes",
        lambda: (
            kube.json("-n", namespace, "get", "pexp", "concise-summaries")["status"]["votes"].get("challengerWins", 0)
            >= 8
        ),
        120,
    )
    old = operator_pod(kube)["metadata"]["name"]
    kube("-n", OPERATOR_NAMESPACE, "delete", "pod", old, "--wait=false")
    # Votes keep coming while no operator runs; the backend keeps them until the next operator reads them.
    vote(kube, namespace, challenger=17, champion=3, seed=12)

    new = wait_for(
        "a new operator pod to be ready",
        lambda: (pod := operator_pod(kube)) and pod["metadata"]["name"] != old and pod["metadata"]["name"],
        180,
    )
    obj = wait_phase(kube, namespace, "Concluded", timeout=300)

    status = obj["status"]
    assert status["votes"]["challengerWins"] == 25, status["votes"]
    assert status["votes"]["championWins"] == 5, status["votes"]
    assert status["winner"] == "challenger"
    assert len(status["promotions"]) == 1, status["promotions"]
    assert len(events(kube, namespace, "Promoted")) == 1
    logs = kube("-n", OPERATOR_NAMESPACE, "logs", f"pod/{new}")
    assert logs.count('"event": "prompt_promoted"') <= 1
