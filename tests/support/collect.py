"""A fake of the backend's two in-memory stores (ids restart at 1 on every restart) for collect tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel

from canopy_operator.api.status import Collection, EpochPrompts, VoteCounts
from canopy_operator.core.collect import AbEntry, AbIngestResult, FeedbackEntry, ingest_ab, text_hash

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
CHAMPION_HASH = text_hash(CHAMPION)
CHALLENGER_HASH = text_hash(CHALLENGER)
TEST_PROMPTS = EpochPrompts(prompt=CHAMPION_HASH, prompt_b=CHALLENGER_HASH)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
_EPOCH0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
M = TypeVar("M", bound=BaseModel)


class FakeBackend:
    """Append-only stores with the backend's id and timestamp rules; ``restart`` empties both."""

    def __init__(self) -> None:
        self.ab: list[AbEntry] = []
        self.feedback: list[FeedbackEntry] = []
        self._clock = 0

    def _stamp(self) -> str:
        self._clock += 1
        return (_EPOCH0 + timedelta(microseconds=self._clock)).isoformat()

    def vote(
        self,
        preference: str,
        *,
        challenger_on_a: bool = True,
        input_text: str | None = None,
        answers: tuple[str, str] | None = None,
    ) -> AbEntry:
        """Record a vote; ``preference`` is the on-screen side ``a``/``b`` or ``tie``."""
        stamp = self._stamp()
        mapping = {"a": "prompt_b", "b": "prompt"} if challenger_on_a else {"a": "prompt", "b": "prompt_b"}
        response_a, response_b = answers or (f"answer a {stamp}", f"answer b {stamp}")
        entry = AbEntry(
            id=len(self.ab) + 1,
            timestamp=stamp,
            preference=preference,
            winning_prompt=mapping.get(preference),
            prompt_mapping=mapping,
            input_text=input_text if input_text is not None else f"text {stamp}",
            response_a=response_a,
            response_b=response_b,
        )
        self.ab.append(entry)
        return entry

    def vote_for(self, side: str, *, challenger_on_a: bool = True, input_text: str | None = None) -> AbEntry:
        """Record a vote for ``champion``/``challenger`` (or ``tie``) shown with the given layout."""
        if side == "tie":
            return self.vote("tie", challenger_on_a=challenger_on_a, input_text=input_text)
        on_a = (side == "challenger") == challenger_on_a
        return self.vote("a" if on_a else "b", challenger_on_a=challenger_on_a, input_text=input_text)

    def thumbs(self, rating: str, input_text: str | None = None) -> FeedbackEntry:
        """Record a feedback entry."""
        stamp = self._stamp()
        entry = FeedbackEntry(
            id=len(self.feedback) + 1,
            timestamp=stamp,
            feature="summarize",
            rating=rating,
            input_text=input_text if input_text is not None else f"feedback {stamp}",
            response_text=f"response {stamp}",
            comment=None,
        )
        self.feedback.append(entry)
        return entry

    def restart(self) -> None:
        """Everything is lost and ids start again at 1."""
        self.ab = []
        self.feedback = []


def roundtrip(model: M) -> M:
    """The model as the operator reads it back from the object's status after a restart."""
    return type(model).model_validate_json(model.model_dump_json(by_alias=True))


def poll_ab(
    backend: FakeBackend,
    collection: Collection,
    votes: VoteCounts,
    *,
    cap: int = 3,
    prompts: EpochPrompts = TEST_PROMPTS,
) -> AbIngestResult:
    """One poll of ``GET /feedback/ab`` for the default test."""
    entries = list(backend.ab)
    return ingest_ab(collection, votes, entries, len(entries), prompts, CHAMPION_HASH, CHALLENGER_HASH, cap, now=NOW)
