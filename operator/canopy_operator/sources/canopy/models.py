"""Typed answers of the Canopy backend (Generation 1), validated strictly: a wrong type is an error.

Field values the backend does not validate itself (``rating``, ``preference``, ``prompt_mapping`` values,
``feature``) are plain strings here too: one odd entry posted by hand must not make the whole list unreadable.
Interpreting them is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from canopy_operator.core.collect import AbEntry, FeedbackEntry

PromptKey = Literal["prompt", "prompt_b"]
"""The config key names the backend uses for the champion (``prompt``) and the challenger (``prompt_b``)."""


def _aware_iso_timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {value!r}")
    return value


Timestamp = Annotated[str, AfterValidator(_aware_iso_timestamp)]
"""An ISO-8601 timestamp with offset, kept as the backend's exact text (it is part of entry fingerprints)."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", populate_by_name=True)


class FeatureFlags(_Strict):
    """``GET /feature-flags``: the seven booleans of the running process (its config as read at start)."""

    summarize: bool
    feedback: bool
    ab_testing: bool
    information_search: bool = Field(alias="information-search")
    student_assistant: bool = Field(alias="student-assistant")
    shields: bool
    socratic_tutor: bool = Field(alias="socratic-tutor")


class Gen2FeatureFlags(_Strict):
    """``GET /feature-flags`` of a Generation 2 backend: its sections' flags (the probe compares feedback and
    ab_testing); Generation 1's other features are gone from its config."""

    summarization: bool
    feedback: bool
    ab_testing: bool


class FeedbackItem(_Strict):
    """One thumbs entry of ``GET /feedback``."""

    id: int
    timestamp: Timestamp
    feature: str
    rating: str
    input_text: str
    response_text: str
    comment: str | None

    def to_entry(self) -> FeedbackEntry:
        """The pure entry the collection logic works on."""
        return FeedbackEntry(
            id=self.id,
            timestamp=self.timestamp,
            feature=self.feature,
            rating=self.rating,
            input_text=self.input_text,
            response_text=self.response_text,
            comment=self.comment,
        )


class FeedbackHead(_Strict):
    """``GET /feedback`` without its list: what the log reader checks of the answer besides the entries."""

    total: int


class FeedbackList(FeedbackHead):
    """``GET /feedback``: every thumbs entry since the process started (no paging)."""

    feedback: list[FeedbackItem]

    def to_entries(self) -> list[FeedbackEntry]:
        return [item.to_entry() for item in self.feedback]

    @model_validator(mode="after")
    def _total_counts_entries(self) -> Self:
        if self.total != len(self.feedback):
            raise ValueError(f"total is {self.total} but {len(self.feedback)} entries were listed")
        return self


class AbFeedbackItem(_Strict):
    """One A/B vote of ``GET /feedback/ab``; ``winning_prompt`` is a config key name (or null for a tie)."""

    id: int
    timestamp: Timestamp
    feature: str
    preference: str
    winning_prompt: str | None
    prompt_mapping: dict[str, str]
    input_text: str
    response_a: str
    response_b: str

    def to_entry(self) -> AbEntry:
        """The pure entry the collection logic works on."""
        return AbEntry(
            id=self.id,
            timestamp=self.timestamp,
            preference=self.preference,
            winning_prompt=self.winning_prompt,
            prompt_mapping=dict(self.prompt_mapping),
            input_text=self.input_text,
            response_a=self.response_a,
            response_b=self.response_b,
        )


class AbFeedbackHead(_Strict):
    """``GET /feedback/ab`` without its list: what the log reader checks of the answer besides the entries."""

    total: int
    prompt_a_wins: int
    prompt_b_wins: int
    ties: int


class AbFeedbackList(AbFeedbackHead):
    """``GET /feedback/ab``: every A/B vote since the process started, with the backend's own counts."""

    entries: list[AbFeedbackItem]

    def to_entries(self) -> list[AbEntry]:
        return [item.to_entry() for item in self.entries]

    @model_validator(mode="after")
    def _total_counts_entries(self) -> Self:
        if self.total != len(self.entries):
            raise ValueError(f"total is {self.total} but {len(self.entries)} entries were listed")
        return self


class FeedbackAccepted(_Strict):
    """Answer of ``POST /feedback`` and ``POST /feedback/ab``."""

    status: Literal["ok"]
    feedback_id: int


class ErrorDetail(BaseModel):
    """FastAPI's error body when ``detail`` is a message (404, 400)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    detail: str


@dataclass(frozen=True)
class AbAnswers:
    """The two answers of one ``POST /summarize/ab``, as shown (``a``/``b``) and by config key."""

    mapping: dict[str, PromptKey]
    """Which config key produced the answer shown on each side, e.g. ``{"a": "prompt_b", "b": "prompt"}``."""
    response_a: str
    response_b: str

    def answer_of(self, key: PromptKey) -> str:
        """The answer produced with ``summarize.<key>``."""
        return self.response_a if self.mapping["a"] == key else self.response_b

    @property
    def prompt(self) -> str:
        """The answer produced with ``summarize.prompt`` (the champion)."""
        return self.answer_of("prompt")

    @property
    def prompt_b(self) -> str:
        """The answer produced with ``summarize.prompt_b`` (the challenger)."""
        return self.answer_of("prompt_b")
