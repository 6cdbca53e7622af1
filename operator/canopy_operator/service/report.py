"""What a reconcile pass tells the world: the status to write, events, when to run again, what happened."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from canopy_operator.api.status import PromptExperimentStatus

Event = tuple[str, str, str]
"""(type, reason, message) of a Kubernetes event."""


@dataclass(frozen=True)
class Report:
    """The outcome of one pass."""

    status: PromptExperimentStatus
    events: tuple[Event, ...] = ()
    next_in: float = 30.0
    failed: bool = False
    delivered: str | None = None
    """Delivery result for metrics: ``changed``, ``unchanged``, ``failed`` (None: nothing delivered)."""
    decision: str | None = None
    rolling: str | None = None
    """The Deployment (of the experiment's namespace) whose rollout the pass found unfinished: the daemon
    listens to it, the watch wakes it when it sees the rollout finished, so the next poll can wait longer
    (``ROLLOUT_POLL_SECONDS``, a safety net)."""
    recorded_start: bool = False
    """The pass's config write carried the start record (:mod:`canopy_operator.core.startrecord`) instead of a
    status write before it: its status may wait for the rollout as an intent's would."""
    raw_status: dict[str, Any] | None = field(default=None)
    """Written instead of ``status`` when the stored status is unreadable (only phase and conditions change)."""


@dataclass(frozen=True)
class Effects:
    """What the steps of a pass found and did besides the status (accumulated, never mutated)."""

    events: tuple[Event, ...] = ()
    degraded: tuple[str, str] | None = None
    delivered: str | None = None
    decision: str | None = None
    awaiting_review: bool = False
    gate_block: str | None = None
    fresh_rollout: bool = False
    suspended: bool = False
    rolling: str | None = None
    recorded_start: bool = False

    def event(self, reason: str, message: str, *, warning: bool = False) -> Effects:
        return self.with_events((("Warning" if warning else "Normal", reason, message),))

    def with_events(self, events: tuple[Event, ...]) -> Effects:
        return replace(self, events=self.events + events)

    def degrade(self, reason: str, message: str) -> Effects:
        return replace(self, degraded=(reason, message))
