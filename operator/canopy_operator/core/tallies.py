"""Counting votes kept in a durable store (MLflow assessments, Phoenix span annotations): pure functions over
records the adapters parse, so every source reaches the same :class:`~canopy_operator.core.readings.VoteTally`
and the decision code never knows where a vote was kept.

MLflow (the course's Generation 2 backend, ``../shared/vote-sources.md``): one A/B vote is two ``ab_preference``
assessments, ``True`` on the preferred answer's trace and ``False`` on the other; the arm is named only in the
rationale, ``"User preferred this response (mapped to <arm>)"``, or, when an application tags its traces, in a
trace tag, or (``Prompt``) by the prompt version the trace links to (``mlflow.linkedPrompts``, present when the
application loads the prompt inside the trace) compared with the test's pinned versions. A vote counts when it is
``True``, from a human source (``canopy_user``), valid (not overridden), and
its arm is ``champion`` or ``challenger``; the ``False`` twin is never counted, so each vote counts once. Thumbs
are ``user_satisfaction`` assessments: ``False`` is a thumbs-down.

Phoenix: a vote is an annotation on the selected span whose ``metadata.arm`` names the arm and whose score is 1
(or label ``true``/``preferred``); re-posting the same identifier replaces a vote, so the latest per identifier
counts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from canopy_operator.core.readings import VoteTally

Arm = Literal["champion", "challenger"]
ARMS: tuple[Arm, ...] = ("champion", "challenger")
HUMAN_SOURCE_TYPE = "HUMAN"
CANOPY_USER = "canopy_user"
AB_PREFERENCE = "ab_preference"
LINKED_PROMPTS = "mlflow.linkedPrompts"
USER_SATISFACTION = "user_satisfaction"
_MAPPED = re.compile(r"\(mapped to ([A-Za-z_]+)\)\s*$")
_PREFERRED_LABELS = frozenset({"true", "preferred", "win", "winner", "yes", "1"})
_NEGATIVE_LABELS = frozenset({"thumbs_down", "false", "negative", "bad", "no", "0"})


def arm_of(text: str | None) -> Arm | None:
    """The arm a Generation 2 rationale names (``... (mapped to challenger)``), else None (``unknown`` too)."""
    if not text:
        return None
    match = _MAPPED.search(text)
    name = match.group(1) if match else None
    return name if name in ARMS else None


def as_arm(value: str | None) -> Arm | None:
    """A tag or metadata value naming an arm, else None."""
    text = (value or "").strip().lower()
    return text if text in ARMS else None


@dataclass(frozen=True)
class MlflowAssessment:
    """One feedback assessment on a trace, as the adapter read it."""

    name: str
    value: object
    """The feedback value (``True``/``False`` for the Generation 2 backend's assessments)."""
    rationale: str | None = None
    source_type: str | None = None
    source_id: str | None = None
    valid: bool = True
    """False once another assessment overrides it."""
    created_at: datetime | None = None


@dataclass(frozen=True)
class MlflowTrace:
    """A trace of the test's window and the assessments it carries."""

    trace_id: str
    timestamp_ms: int
    assessments: Sequence[MlflowAssessment] = ()
    tags: dict[str, str] = field(default_factory=dict)
    request: str | None = None
    """The request's text as the search returned it (possibly a preview)."""
    response: str | None = None


def _human(a: MlflowAssessment, source_id: str) -> bool:
    return (a.source_type or "").upper() == HUMAN_SOURCE_TYPE and a.source_id == source_id


def _truthy(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _latest(items: Iterable[MlflowAssessment]) -> MlflowAssessment | None:
    """The newest of a trace's assessments of one name (a user who changed their mind counts once)."""
    latest: MlflowAssessment | None = None
    for item in items:
        if latest is None or _when(item.created_at) >= _when(latest.created_at):
            latest = item
    return latest


def _when(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else float("-inf")


@dataclass(frozen=True)
class SourceCount:
    """The tally of a window, and what was seen but not counted (for messages and metrics)."""

    tally: VoteTally
    unmapped: int = 0
    """Preferred answers whose arm could not be told (``mapped to unknown``, no tag)."""
    not_human: int = 0
    """Assessments from another source (an LLM judge, a script)."""


def linked_arm(trace: MlflowTrace, prompt: str | None, versions: dict[str, Arm]) -> Arm | None:
    """The arm whose pinned version of ``prompt`` the trace links to (``mlflow.linkedPrompts``), else None."""
    try:
        links = json.loads(trace.tags.get(LINKED_PROMPTS, "[]"))
    except ValueError:
        return None
    found: set[Arm] = set()
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or (prompt is not None and link.get("name") != prompt):
            continue
        arm = versions.get(str(link.get("version")))
        if arm is not None:
            found.add(arm)
    return found.pop() if len(found) == 1 else None


def count_mlflow_votes(
    traces: Iterable[MlflowTrace],
    *,
    arm_from: Literal["Rationale", "Tag", "Prompt"] = "Rationale",
    arm_tag: str | None = None,
    source_id: str = CANOPY_USER,
    prompt: str | None = None,
    versions: dict[str, Arm] | None = None,
) -> SourceCount:
    """Challenger and champion wins over the traces of a window (recounted whole every poll); with ``Prompt``,
    ``versions`` maps the test's pinned registry versions (of ``prompt``) to their arms."""
    wins = {"champion": 0, "challenger": 0}
    unmapped = not_human = 0
    for trace in traces:
        prefs = [a for a in trace.assessments if a.name == AB_PREFERENCE and a.valid]
        human = [a for a in prefs if _human(a, source_id)]
        not_human += len(prefs) - len(human)
        vote = _latest(human)
        if vote is None or _truthy(vote.value) is not True:
            continue
        if arm_from == "Rationale":
            arm = arm_of(vote.rationale)
        elif arm_from == "Tag":
            arm = as_arm(trace.tags.get(arm_tag or ""))
        else:
            arm = linked_arm(trace, prompt, versions or {})
        if arm is None:
            unmapped += 1
            continue
        wins[arm] += 1
    tally = VoteTally(challenger_wins=wins["challenger"], champion_wins=wins["champion"])
    return SourceCount(tally, unmapped, not_human)


def thumbs_down(trace: MlflowTrace, *, source_id: str = CANOPY_USER) -> MlflowAssessment | None:
    """The trace's latest human ``user_satisfaction`` when it is a thumbs-down, else None."""
    latest = _latest(a for a in trace.assessments if a.name == USER_SATISFACTION and a.valid and _human(a, source_id))
    return latest if latest is not None and _truthy(latest.value) is False else None


@dataclass(frozen=True)
class SpanAnnotation:
    """One Phoenix span annotation, as the adapter read it."""

    span_id: str
    name: str
    identifier: str
    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    arm: str | None = None
    """``metadata.arm``."""
    annotator_kind: str | None = None
    updated_at: datetime | None = None


def _preferred(a: SpanAnnotation) -> bool:
    if a.score is not None:
        return a.score >= 1
    return (a.label or "").strip().lower() in _PREFERRED_LABELS


def latest_per_identifier(annotations: Iterable[SpanAnnotation]) -> list[SpanAnnotation]:
    """One annotation per (span, name, identifier): the newest (a re-posted vote replaces the old one)."""
    latest: dict[tuple[str, str, str], SpanAnnotation] = {}
    for a in annotations:
        key = (a.span_id, a.name, a.identifier)
        kept = latest.get(key)
        if kept is None or _when(a.updated_at) >= _when(kept.updated_at):
            latest[key] = a
    return list(latest.values())


def count_phoenix_votes(
    annotations: Iterable[SpanAnnotation], counted_spans: set[str], *, name: str, human_only: bool = True
) -> SourceCount:
    """Wins per arm from the vote annotations on the spans that count (the selection the spec made)."""
    wins = {"champion": 0, "challenger": 0}
    unmapped = not_human = 0
    for a in latest_per_identifier(x for x in annotations if x.name == name and x.span_id in counted_spans):
        if human_only and (a.annotator_kind or "").upper() != HUMAN_SOURCE_TYPE:
            not_human += 1
            continue
        if not _preferred(a):
            continue
        arm = as_arm(a.arm)
        if arm is None:
            unmapped += 1
            continue
        wins[arm] += 1
    tally = VoteTally(challenger_wins=wins["challenger"], champion_wins=wins["champion"])
    return SourceCount(tally, unmapped, not_human)


def is_negative(a: SpanAnnotation) -> bool:
    """A thumbs-down annotation: label thumbs_down (or false...) or a score of 0."""
    if a.label is not None:
        return a.label.strip().lower() in _NEGATIVE_LABELS
    return a.score is not None and a.score <= 0
