"""Whether a Deployment finished rolling out, by the rule `kubectl rollout status` uses.

The backend reads its config only at start-up, and an old pod keeps answering `/feature-flags` (with the
same flags when only a prompt text changed) until it is replaced. So the operator counts a config as live
only once the Deployment's controller reports every replica updated and available and no old replica left.
"""

from __future__ import annotations

from dataclasses import dataclass


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
