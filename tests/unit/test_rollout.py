"""The rollout rule: a config counts as live only once every replica runs it (as `kubectl rollout status`)."""

from __future__ import annotations

import pytest

from canopy_operator.k8s.rollout import RolloutView, rollout_of


def view(**fields: int | None) -> RolloutView:
    base: dict[str, int | None] = {
        "generation": 3,
        "observed_generation": 3,
        "desired_replicas": 2,
        "replicas": 2,
        "updated_replicas": 2,
        "available_replicas": 2,
    }
    base.update(fields)
    return RolloutView(name="canopy-backend", **base)  # type: ignore[arg-type]


def test_rollout_complete_when_every_replica_is_updated_and_available() -> None:
    assert view().pending() is None


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"observed_generation": None}, "has not yet seen generation 3"),
        ({"observed_generation": 2}, "has not yet seen generation 3"),
        ({"updated_replicas": 1}, "1 of 2 replicas run the new config"),
        ({"replicas": 3}, "1 old replicas still terminating"),
        ({"available_replicas": 1}, "1 of 2 updated replicas available"),
    ],
)
def test_rollout_pending_says_what_it_waits_for(fields: dict[str, int | None], says: str) -> None:
    pending = view(**fields).pending()
    assert pending is not None
    assert says in pending


def test_rollout_of_a_watched_body_reads_the_fields_and_nothing_else() -> None:
    body = {
        "metadata": {"generation": 3, "resourceVersion": "77", "annotations": {"a": "b"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "x"}]}}},
        "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1},
    }
    view = rollout_of("canopy-backend", body)
    assert view == RolloutView("canopy-backend", 3, 3, 2, 2, 2, 1, resource_version="77")
    assert view.pending() == "Deployment canopy-backend: 1 of 2 updated replicas available"


@pytest.mark.parametrize(
    "body",
    [{}, {"metadata": None, "spec": "x", "status": []}, {"status": {"replicas": "2", "observedGeneration": True}}],
)
def test_rollout_of_a_malformed_body_is_never_finished_and_never_fails(body: dict[str, object]) -> None:
    view = rollout_of("d", body)
    assert view.pending() is not None
    assert view.desired_replicas == 1
