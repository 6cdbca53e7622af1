"""The delivery port: how a reconcile pass reads and writes the four managed keys, whatever holds them.

An adapter (``configmap``, ``git``) implements :class:`Delivery`; the pass sees only this module. What differs
between adapters and matters to the pass's decisions is stated as data (:class:`DeliveryTraits`), never
found out by testing an adapter's type, and the status model is not an adapter's business: an adapter
returns facts (:class:`SourceState`, :class:`WriteResult`) and the pure core turns them into status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from canopy_operator.core.values import ManagedKeys

Failpoint = Callable[[str], None]
"""A named place where a test may stop the process (see :mod:`canopy_operator.failpoints`)."""


def no_failpoint(name: str) -> None:
    """The failpoint of a production run: nothing happens."""


class DeliveryError(Exception):
    """The config could not be delivered; ``reason`` is the condition reason, the message says why.

    No partial write happened: an adapter raises before it writes, or after a write that is complete.
    """

    reason = "DeliveryFailed"


class SourceMissing(DeliveryError):
    """The config source (ConfigMap, or its key) does not exist."""

    reason = "ConfigMapMissing"


class InvalidValues(DeliveryError):
    """The values are unreadable, or an edit would break the chart's schema; nothing was written."""

    reason = "InvalidValues"


@dataclass(frozen=True)
class DeliveryTraits:
    """What the pass must know about a delivery to decide (instead of asking which adapter it is)."""

    reviewed: bool = False
    """A write goes to a review branch; it takes effect only once a human merges it (Git PullRequest mode)."""
    versioned: bool = False
    """``SourceState.version`` names what gets deployed (a commit Argo CD syncs), so it is the revision."""
    target: str = ""
    """Where a change lands, for messages (the branch Argo CD syncs); empty when there is nothing to name."""
    carries_record: bool = False
    """A write can carry a start record (:mod:`canopy_operator.core.startrecord`) with the config, atomically,
    and ``SourceState.record`` reads it back."""


@dataclass(frozen=True)
class SourceState:
    """The managed keys as they are in the config source now."""

    keys: ManagedKeys
    text: str
    version: str
    argo_managed: bool
    record: str | None = None
    """The start record the source carries (``traits.carries_record`` deliveries; unparsed, the tenant's)."""
    annotation_bytes: int = 0
    """The size of the source's annotations (keys and values, UTF-8), where it has them."""


@dataclass(frozen=True)
class WriteResult:
    """What a write did."""

    changed: bool
    revision: str
    rolled: bool
    review_branch: str | None = None
    """Reviewed deliveries: the branch that carries the change (None: written straight to the source)."""
    review_url: str | None = None
    """Reviewed deliveries: the pull request opened for it (None: no forge configured)."""


class Delivery(Protocol):
    """A way to read and write the managed keys (a ConfigMap and its rollout, or a Git repository)."""

    @property
    def traits(self) -> DeliveryTraits: ...

    async def read(self) -> SourceState:
        """The managed keys in the source now (raises :class:`DeliveryError`)."""
        ...

    async def write(
        self, desired: ManagedKeys, *, ensure_rolled: bool = False, record: str | None = None
    ) -> WriteResult:
        """Make the source carry ``desired``; ``ensure_rolled``: also roll when the text is unchanged but the
        running backend may not have started with it (a pass died between the write and the roll). ``record``:
        a start record to store in the same write (``traits.carries_record`` only; a write without one drops
        the one the source carries)."""
        ...

    async def rollout_pending(self) -> str | None:
        """What the rollout of the written config still waits for (None when done or not observable)."""
        ...
