"""Reading votes and feedback from the backend into status (I/O around the pure core.collect)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import Collection, EpochPrompts, Negatives, PromptExperimentStatus
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.models import AbFeedbackList, FeedbackList
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.collect import (
    FeedbackEntry,
    FeedbackIngestResult,
    add_negatives,
    ingest_ab,
    ingest_feedback,
    text_hash,
)
from canopy_operator.core.evaluation import with_negatives_counts
from canopy_operator.core.ledger import Ledger, add_entries


class BackendReader(Protocol):
    """What a reconcile pass reads from the backend."""

    async def flags(self) -> dict[str, bool]: ...

    async def ab_ready(self) -> bool: ...

    async def ab_feedback(self) -> AbFeedbackList: ...

    async def feedback(self) -> FeedbackList: ...


class LedgerStore(Protocol):
    """Where the thumbs-down entries read are kept (the experiment's ledger Secret)."""

    def ledger_name(self) -> str: ...

    def dataset_name(self, ledger: Ledger) -> str | None: ...

    async def load(self) -> Ledger: ...

    async def save(self, ledger: Ledger) -> None: ...


class ClientReader:
    """BackendReader over the HTTP client."""

    def __init__(self, client: CanopyClient) -> None:
        self.client = client

    async def flags(self) -> dict[str, bool]:
        flags = await self.client.feature_flags()
        return {k: bool(v) for k, v in flags.model_dump(by_alias=True).items()}

    async def ab_ready(self) -> bool:
        return await self.client.ab_ready()

    async def ab_feedback(self) -> AbFeedbackList:
        return await self.client.ab_feedback()

    async def feedback(self) -> FeedbackList:
        return await self.client.feedback()


async def poll_backend(
    spec: PromptExperimentSpec,
    st: PromptExperimentStatus,
    backend: BackendReader,
    now: datetime,
    ledger: LedgerStore | None = None,
) -> tuple[PromptExperimentStatus, bool]:
    """Read both stores, then count what is new. Both reads succeed before anything is counted, and new
    thumbs-down entries are in the ledger before the returned status moves the read position past them."""
    assert st.test is not None
    assert st.original is not None
    ab = await backend.ab_feedback()
    fb = await backend.feedback()
    live = lc.desired_keys(spec, st, st.original)
    assert live is not None
    prompts = EpochPrompts(
        prompt=text_hash(live.prompt) if live.prompt else None,
        prompt_b=text_hash(live.prompt_b) if live.prompt_b else None,
    )
    votes = ingest_ab(
        st.collection,
        st.votes,
        ab.to_entries(),
        ab.total,
        prompts,
        st.test.champion_hash,
        st.test.challenger_hash,
        spec.analysis.duplicate_vote_cap,
        now=now,
    )
    negatives = st.negatives
    collection = votes.collection
    restarted = votes.restart_detected
    if spec.feedback.enabled:
        collection, negatives, fed_restart = await _keep_negatives(collection, negatives, fb, ledger, now)
        restarted = restarted or fed_restart
    return st.model_copy(update={"collection": collection, "votes": votes.votes, "negatives": negatives}), restarted


async def _keep_negatives(
    collection: Collection, negatives: Negatives, fb: FeedbackList, ledger: LedgerStore | None, now: datetime
) -> tuple[Collection, Negatives, bool]:
    entries = fb.to_entries()
    fed = ingest_feedback(collection, entries, fb.total, set(), now=now)
    if ledger is None:
        return fed.collection, add_negatives(negatives, len(fed.new_negatives)), fed.restart_detected
    if fed.new_negatives:
        # Only now is the ledger worth a read: dedupe against every entry kept, across restarts and crashes.
        kept = await ledger.load()
        fed = ingest_feedback(collection, entries, fb.total, kept.fingerprints(), now=now)
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
