"""Kubernetes-style conditions (metav1.Condition) and the condition types this operator sets."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from canopy_operator.api.base import ApiModel


class ConditionType(StrEnum):
    """Condition types, usable with ``kubectl wait --for=condition=<Type>``."""

    READY = "Ready"
    """The experiment's desired config is delivered and verified in the running backend."""
    PROGRESSING = "Progressing"
    """A config change is on its way (written, rolling out, or waiting for a merge or sync)."""
    DEGRADED = "Degraded"
    """Something needs attention; the reason says what."""
    CONFIG_DRIFT = "ConfigDrift"
    """The backend's config no longer matches what the operator applied."""
    DECIDED = "Decided"
    """The sequential test reached a decision."""
    AWAITING_APPROVAL = "AwaitingApproval"
    """A Manual promotion waits for ``spec.promotion.approved``."""
    PROMOTED = "Promoted"
    """The challenger was promoted and verified."""
    EVALUATION_PASSED = "EvaluationPassed"
    """The latest evaluation of the challenger passed the configured threshold."""


class Condition(ApiModel):
    """The state of one aspect of the experiment (same shape as metav1.Condition)."""

    type: str = Field(min_length=1, max_length=316)
    """Type of condition in CamelCase, e.g. Ready, Progressing, Degraded."""
    status: Literal["True", "False", "Unknown"]
    """Status of the condition: True, False or Unknown."""
    reason: str = Field(min_length=1, max_length=1024)
    """A programmatic CamelCase identifier of the last transition's cause."""
    message: str = Field(default="", max_length=32768)
    """A human-readable explanation of the transition."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: int = Field(default=0, ge=0)
    """The .metadata.generation this condition was computed from."""
