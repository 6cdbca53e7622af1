"""What a vote source hands the pass: source-neutral readings that the pure collection code counts.

Two shapes of vote store exist. A **log** (the Canopy Generation 1 backend) is append-only in process memory
and forgets everything on restart: it is read from a position kept in status, restarts are detected, and
every vote is counted once (``core.collect.ingest_ab``). A **tally** (MLflow assessments, Phoenix span
annotations) is durable and recounted over the test's window every poll: idempotent, no read position, and a
late vote on an old trace is counted. Thumbs-down feedback is a log in both cases (the ledger dedupes it by
fingerprint, so a recounted window adds nothing twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from canopy_operator.api.status import VoteCounts
from canopy_operator.core.collect import AbEntry, FeedbackEntry


@dataclass(frozen=True)
class VoteLog:
    """Every A/B vote the store holds now, oldest first, and its own count of them."""

    entries: Sequence[AbEntry]
    total: int


@dataclass(frozen=True)
class VoteTally:
    """The votes of the test's window, recounted by the source (arms already resolved)."""

    challenger_wins: int
    champion_wins: int
    ties: int = 0


@dataclass(frozen=True)
class FeedbackLog:
    """Every feedback entry the store holds now (thumbs up and down), oldest first, and its count."""

    entries: Sequence[FeedbackEntry]
    total: int


@dataclass(frozen=True)
class Reading:
    """One poll of a vote source: both stores were read before anything is counted."""

    votes: VoteLog | VoteTally
    feedback: FeedbackLog


@dataclass(frozen=True)
class Window:
    """What a recounting source counts: the test's start and the feature whose feedback belongs to it."""

    started_at: datetime
    feature: str = "summarize"
    champion_version: str | None = None
    """The registry versions the arms are pinned to (MLflow prompt store), for a source that tells a vote's arm
    by the prompt version its trace links to."""
    challenger_version: str | None = None


def tally_votes(votes: VoteCounts, tally: VoteTally) -> VoteCounts:
    """The counts of a recounted window replace the previous ones (never added: a recount is idempotent)."""
    return votes.model_copy(
        update={"challenger_wins": tally.challenger_wins, "champion_wins": tally.champion_wins, "ties": tally.ties}
    )
