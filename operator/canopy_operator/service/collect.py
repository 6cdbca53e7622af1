"""Reading votes and feedback from the vote source into status (I/O around the pure ``core.collect``)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import Collection, EpochPrompts, Negatives, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.collect import (
    FeedbackEntry,
    FeedbackIngestResult,
    add_negatives,
    ingest_ab,
    ingest_feedback,
    text_hash,
)
from canopy_operator.core.evaluation.trigger import with_negatives_counts
from canopy_operator.core.ledger import Ledger, add_entries
from canopy_operator.core.readings import FeedbackLog, VoteLog, Window, tally_votes
from canopy_operator.sources.base import VoteSource


class LedgerStore(Protocol):
    """Where the thumbs-down entries read are kept (the experiment's ledger Secret)."""

    def ledger_name(self) -> str: ...

    def dataset_name(self, ledger: Ledger) -> str | None: ...

    async def load(self) -> Ledger: ...

    async def save(self, ledger: Ledger) -> None: ...


async def poll_votes(
    spec: PromptExperimentSpec,
    st: PromptExperimentStatus,
    source: VoteSource,
    now: datetime,
    ledger: LedgerStore | None = None,
) -> tuple[PromptExperimentStatus, bool]:
    """Read the source, then count what is new; whether a restart of the store was seen.

    Both stores are read before anything is counted, and new thumbs-down entries are in the ledger before
    the returned status moves the read position past them."""
    assert st.test is not None
    assert st.original is not None
    window = Window(
        started_at=st.test.started_at,
        feature=spec.backend.feature,
        champion_version=st.test.champion_version,
        challenger_version=st.test.challenger_version,
    )
    reading = await source.read(window)
    collection, votes, restarted = st.collection, st.votes, False
    if isinstance(reading.votes, VoteLog):
        live = lc.desired_keys(spec, st, st.original)
        assert live is not None
        prompts = EpochPrompts(
            prompt=text_hash(live.prompt) if live.prompt else None,
            prompt_b=text_hash(live.prompt_b) if live.prompt_b else None,
        )
        counted = ingest_ab(
            collection,
            votes,
            reading.votes.entries,
            reading.votes.total,
            prompts,
            st.test.champion_hash,
            st.test.challenger_hash,
            spec.analysis.duplicate_vote_cap,
            now=now,
        )
        collection, votes, restarted = counted.collection, counted.votes, counted.restart_detected
    else:
        votes = tally_votes(votes, reading.votes)
    negatives = st.negatives
    if spec.feedback.enabled:
        collection, negatives, fed_restart = await _keep_negatives(
            collection, negatives, reading.feedback, ledger, now, spec.backend.feature
        )
        restarted = restarted or fed_restart
    return st.model_copy(update={"collection": collection, "votes": votes, "negatives": negatives}), restarted


async def _keep_negatives(
    collection: Collection,
    negatives: Negatives,
    fb: FeedbackLog,
    ledger: LedgerStore | None,
    now: datetime,
    feature: str,
) -> tuple[Collection, Negatives, bool]:
    fed = ingest_feedback(collection, fb.entries, fb.total, set(), now=now, feature=feature)
    if ledger is None:
        return fed.collection, add_negatives(negatives, len(fed.new_negatives)), fed.restart_detected
    if fed.new_negatives:
        # Only now is the ledger worth a read: dedupe against every entry kept, across restarts and crashes.
        kept = await ledger.load()
        fed = ingest_feedback(collection, fb.entries, fb.total, kept.fingerprints(), now=now, feature=feature)
        kept = await _append(ledger, kept, fed)
        negatives = with_negatives_counts(negatives, kept.seen, kept.trimmed, ledger.dataset_name(kept))
        negatives = negatives.model_copy(update={"ledger_secret": ledger.ledger_name()})
    return fed.collection, negatives, fed.restart_detected


async def _append(ledger: LedgerStore, kept: Ledger, fed: FeedbackIngestResult) -> Ledger:
    if not fed.new_negatives:
        return kept
    new: tuple[FeedbackEntry, ...] = fed.new_negatives
    grown = add_entries(kept, new, fed.new_fingerprints)
    await ledger.save(grown)  # before the status write moves the read position past these entries
    return grown
