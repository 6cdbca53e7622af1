"""The vote-source port: where the pass reads votes and feedback, and asks the app what it serves.

A reconcile pass needs two things from the application's side: whether the running app serves the config
the experiment delivered (:class:`AppProbe`), and the votes and feedback of the test (:class:`VoteSource`).
For the Canopy Generation 1 backend both are its HTTP API (``sources.canopy``). A source that keeps votes
in MLflow assessments or Phoenix span annotations returns a :class:`~canopy_operator.core.readings.VoteTally`
recounted over the test's :class:`~canopy_operator.core.readings.Window` and is added beside it, without a
change to the pass. Failures are :class:`SourceError`, whatever the adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Literal, Protocol

from canopy_operator.core.readings import Reading, Window

ErrorKind = Literal["unreachable", "http_4xx", "http_5xx", "protocol", "stream"]
RequestTimer = Callable[[str], AbstractContextManager[None]]
"""Times one request to a source, by endpoint (a path template), and counts its :class:`SourceError` by kind."""


class SourceError(Exception):
    """A vote source or app probe failed; the message is one line naming the endpoint, never a raw body."""

    kind: ErrorKind = "protocol"


class AppProbe(Protocol):
    """What the running application reports about the config it serves."""

    @property
    def where(self) -> str:
        """The application's address, for messages."""
        ...

    async def flags(self) -> Mapping[str, bool]:
        """The feature flags the process serves now."""
        ...

    async def ab_ready(self) -> bool:
        """Whether the A/B endpoint serves both prompts."""
        ...


class VoteSource(Protocol):
    """Where votes and feedback are read."""

    @property
    def where(self) -> str: ...

    async def read(self, window: Window) -> Reading:
        """Votes and feedback; both are read before anything is counted (raises :class:`SourceError`)."""
        ...
