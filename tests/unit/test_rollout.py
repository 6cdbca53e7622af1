"""The rollout rule: a config counts as live only once every replica runs it (as `kubectl rollout status`)."""

from __future__ import annotations

import pytest

from canopy_operator.k8s.rollout import RolloutView


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
