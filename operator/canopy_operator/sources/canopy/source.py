"""The Canopy Generation 1 backend as an :class:`~canopy_operator.sources.base.AppProbe` and
:class:`~canopy_operator.sources.base.VoteSource`: ``GET /feature-flags``, the A/B endpoint, and the two
in-memory stores ``GET /feedback/ab`` and ``GET /feedback`` read as logs."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from canopy_operator.core.readings import FeedbackLog, Reading, VoteLog, Window
from canopy_operator.sources.base import RequestTimer
from canopy_operator.sources.canopy.client import CanopyClient


def _untimed(endpoint: str) -> AbstractContextManager[None]:
    return nullcontext()


class CanopySource:
    """One backend's HTTP API, for one pass or for the life of a daemon (the caller closes it)."""

    def __init__(self, client: CanopyClient, timer: RequestTimer = _untimed, *, generation: int = 1) -> None:
        self.client = client
        self.timer = timer
        self.generation = generation

    @property
    def where(self) -> str:
        return self.client.base_url

    async def flags(self) -> Mapping[str, bool]:
        with self.timer("/feature-flags"):
            flags = await self.client.feature_flags(self.generation)
        return {k: bool(v) for k, v in flags.model_dump(by_alias=True).items()}

    async def ab_ready(self) -> bool:
        with self.timer("/summarize/ab"):
            return await self.client.ab_ready()

    async def read(self, window: Window) -> Reading:
        with self.timer("/feedback/ab"):
            ab = await self.client.ab_feedback()
        with self.timer("/feedback"):
            fb = await self.client.feedback()
        return Reading(
            votes=VoteLog(entries=ab.to_entries(), total=ab.total),
            feedback=FeedbackLog(entries=fb.to_entries(), total=fb.total),
        )

    async def aclose(self) -> None:
        await self.client.aclose()
