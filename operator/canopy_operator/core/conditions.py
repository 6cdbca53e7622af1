"""Pure helpers for metav1.Condition lists: transition times change only when the status does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from canopy_operator.api.conditions import Condition

Status = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: Status,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """A new list with ``type_`` set; lastTransitionTime is kept when the status did not change."""
    out: list[Condition] = []
    found = False
    for c in conditions:
        if c.type != type_:
            out.append(c)
            continue
        found = True
        when = c.last_transition_time if c.status == status else now
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message[:32768],
                last_transition_time=when,
                observed_generation=generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message[:32768],
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return out


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of that type, if any."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """Whether the condition exists and is True."""
    c = get_condition(conditions, type_)
    return c is not None and c.status == "True"
