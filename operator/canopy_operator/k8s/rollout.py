"""Whether a Deployment finished rolling out, by the rule `kubectl rollout status` uses.

The backend reads its config only at start-up, and an old pod keeps answering `/feature-flags` (with the
same flags when only a prompt text changed) until it is replaced. So the operator counts a config as live
only once the Deployment's controller reports every replica updated and available and no old replica left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RolloutView:
    """The fields of a Deployment that tell how far its rollout is."""

    name: str
    generation: int
    observed_generation: int | None
    desired_replicas: int
    replicas: int
    updated_replicas: int
    available_replicas: int
    resource_version: str = ""
    """The Deployment's resourceVersion as read (a kept read is reused while the watch still sees it)."""
    uid: str = ""
    """The Deployment's uid (a Deployment deleted and made again under the same name is another object)."""

    def pending(self) -> str | None:
        """None when the rollout is complete, else what it is waiting for (one line)."""
        if self.observed_generation is None or self.observed_generation < self.generation:
            return f"Deployment {self.name}: the controller has not yet seen generation {self.generation}"
        if self.updated_replicas < self.desired_replicas:
            return (
                f"Deployment {self.name}: {self.updated_replicas} of {self.desired_replicas} replicas run the new "
                "config"
            )
        if self.replicas > self.updated_replicas:
            return f"Deployment {self.name}: {self.replicas - self.updated_replicas} old replicas still terminating"
        if self.available_replicas < self.updated_replicas:
            return (
                f"Deployment {self.name}: {self.available_replicas} of {self.updated_replicas} updated replicas "
                "available"
            )
        return None


def rollout_of(name: str, body: Mapping[str, Any]) -> RolloutView:
    """The rollout fields of a Deployment as a watch delivers it (a plain dict); malformed fields read as 0."""
    meta, spec, status = (as_mapping(body.get(k)) for k in ("metadata", "spec", "status"))
    desired = spec.get("replicas")
    observed = status.get("observedGeneration")
    return RolloutView(
        name=name,
        generation=_int(meta.get("generation")),
        observed_generation=_int(observed) if observed is not None else None,
        desired_replicas=_int(desired) if desired is not None else 1,
        replicas=_int(status.get("replicas")),
        updated_replicas=_int(status.get("updatedReplicas")),
        available_replicas=_int(status.get("availableReplicas")),
        resource_version=str(meta.get("resourceVersion") or ""),
        uid=str(meta.get("uid") or ""),
    )


def as_mapping(value: object) -> Mapping[str, Any]:
    """``value`` when it is a mapping (a field of an answer), else an empty one: malformed reads as absent."""
    return value if isinstance(value, Mapping) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
