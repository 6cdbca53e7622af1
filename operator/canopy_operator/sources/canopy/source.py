"""The Canopy Generation 1 backend as an :class:`~canopy_operator.sources.base.AppProbe` and
:class:`~canopy_operator.sources.base.VoteSource`: ``GET /feature-flags``, the A/B endpoint, and the two
in-memory stores ``GET /feedback/ab`` and ``GET /feedback`` read as logs."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from canopy_operator.core.readings import Reading, Window
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
        """Both stores as logs: every id read, an entry built and checked only when the poll counts it (the
        entry with the lowest id and those above the read position, ``core.collect``)."""
        with self.timer("/feedback/ab"):
            votes = await self.client.ab_log()
        with self.timer("/feedback"):
            feedback = await self.client.feedback_log()
        return Reading(votes=votes, feedback=feedback)

    async def aclose(self) -> None:
        await self.client.aclose()
