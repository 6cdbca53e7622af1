"""Reading votes and feedback from the backend into status (I/O around the pure core.collect)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import EpochPrompts, PromptExperimentStatus
from canopy_operator.canopy.client import CanopyClient
from canopy_operator.canopy.models import AbFeedbackList, FeedbackList
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.collect import add_negatives, ingest_ab, ingest_feedback, text_hash


class BackendReader(Protocol):
    """What a reconcile pass reads from the backend."""

    async def flags(self) -> dict[str, bool]: ...

    async def ab_ready(self) -> bool: ...

    async def ab_feedback(self) -> AbFeedbackList: ...

    async def feedback(self) -> FeedbackList: ...


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
    spec: PromptExperimentSpec, st: PromptExperimentStatus, backend: BackendReader, now: datetime
) -> tuple[PromptExperimentStatus, bool]:
    """Read both stores, then count what is new. Both reads succeed before anything is counted."""
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
        fed = ingest_feedback(collection, fb.to_entries(), fb.total, set(), now=now)
        collection = fed.collection
        negatives = add_negatives(negatives, len(fed.new_negatives))
        restarted = restarted or fed.restart_detected
    return st.model_copy(update={"collection": collection, "votes": votes.votes, "negatives": negatives}), restarted
