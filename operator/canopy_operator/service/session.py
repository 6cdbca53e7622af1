"""What one experiment's daemon keeps from one pass to the next, and closes when it stops.

An idle experiment's pass asks its backend for the same few answers every interval. Made anew for each pass,
the HTTP client cost a client, a connection pool and a TCP connection per pass (about a quarter of the idle
CPU, issue #20). The session keeps **one pooled client per experiment** instead:

- made on the first pass that needs it, from the spec as that pass checked it (URL made explicit and allowed);
- kept while what it was made from stays the same (:func:`canopy_operator.service.wiring.source_key`: the URL,
  the request timeout, the body limits, the generation); a change retires it, and it is closed at the end of
  that pass, so a pass never loses its client half-way;
- kept only while passes succeed: a pass that failed (the backend timed out, cut a stream, answered garbage,
  or anything else degraded it) closes it, and the next pass starts with a new one, as every pass did before.
  A cancelled or abandoned request must never leave a connection checked out of a pool that lives on (a
  hostile backend could otherwise exhaust the experiment's four connections for good);
- closed when the daemon stops (the object deleted, the operator stopping), and by
  :meth:`canopy_operator.service.services.Services.close` for any session a daemon left open;
- never shared: one session per experiment, so never across namespaces or tenants, and its pool is bounded
  (:data:`canopy_operator.sources.canopy.wire.POOL_CONNECTIONS`).

It also keeps the experiment's last read of its ConfigMap and Deployment (:class:`~canopy_operator.k8s.watched.
WatchedReads`), served again while the watches say they have not changed: an idle experiment makes no
Kubernetes API read (the decision and its reasons: :mod:`canopy_operator.k8s.watched`).

And while a config write of its own rolls out, the status the pass computed after it (:class:`Deferred`),
written once the rollout finishes or has taken too long (:func:`canopy_operator.core.status.defer_write`).

Nothing here outlives the process or holds what must survive a restart (that lives in status).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.k8s.watched import WatchedReads
from canopy_operator.service.parsed import ParsedObject
from canopy_operator.service.reconcile import internal_error_message
from canopy_operator.sources.canopy.source import CanopySource

log = logging.getLogger("canopy_operator")

MAX_SUPERSEDED = 64
"""Versions replaced by the daemon's own writes that it remembers until the watch delivers the last one."""


@dataclass(frozen=True)
class Deferred:
    """A status a pass computed and did not write, and the stored status it stands on."""

    status: dict[str, Any]
    """What the pass would have written."""
    stored: dict[str, Any]
    """The status as stored when it was deferred (what the pass wrote before: its intent)."""
    since: float
    """When it was first kept (``time.monotonic``); passes that keep it again keep this."""

    def stands_on(self, body: Mapping[str, Any]) -> bool:
        """Whether ``body`` still stores the status it was computed after, and is not being deleted. A spec edit
        does not undo it: it says what the config source holds (what the pass wrote), which the edit does not
        change, and the next pass plans the edit from it as from any written status. Dropped instead, the next
        pass would start from the intent, whose delivery still shows the previous, verified config, and could
        take the pass's own write for drift."""
        meta = body.get("metadata") or {}
        return not meta.get("deletionTimestamp") and (body.get("status") or {}) == self.stored


OpenSource = Callable[[PromptExperimentSpec], CanopySource]
SourceKey = Callable[[PromptExperimentSpec], Hashable]


class ExperimentSession:
    """One experiment's backend client (and what else its daemon keeps), for the life of the daemon."""

    def __init__(self, where: str, open_source: OpenSource, key_of: SourceKey, reads: WatchedReads) -> None:
        self.where = where
        """``namespace/name`` of the experiment (for logs)."""
        self.reads = reads
        """The ConfigMap delivery's Kubernetes calls, reads kept while the watches see no change."""
        self._open_source = open_source
        self._key_of = key_of
        self._source: CanopySource | None = None
        self._key: Hashable = None
        self._retired: list[CanopySource] = []
        self.opened = 0
        """How many backend clients this session made (one unless the backend's settings changed)."""
        self.closed = False
        self.parsed = ParsedObject()
        """The spec and status the current pass parsed, and what an idle pass may skip (:mod:`.parsed`)."""
        self._written: Mapping[str, Any] | None = None
        self._superseded: set[str] = set()
        self._deferred: Deferred | None = None

    def defer(self, status: dict[str, Any], stored: Mapping[str, Any], since: float | None = None) -> None:
        """Keep ``status`` for the next pass instead of writing it (``stored``: the status as stored now;
        ``since``: when it was first kept, now if None). Also how a pass whose write was refused (a conflict)
        hands back the one it took: the pass is redone, and :meth:`take_deferred` checks again that it still
        stands."""
        self._deferred = Deferred(status, dict(stored), time.monotonic() if since is None else since)

    def take_deferred(self, body: Mapping[str, Any]) -> Deferred | None:
        """The deferred status, if ``body`` still stands where it was computed (:meth:`Deferred.stands_on`); it
        is forgotten either way (the pass that takes it writes it). Otherwise the pass starts from the stored
        status, as after a crash."""
        deferred, self._deferred = self._deferred, None
        return deferred if deferred is not None and deferred.stands_on(body) else None

    def note_write(self, replaced: Iterable[str], written: Mapping[str, Any]) -> None:
        """A status write of this daemon succeeded: ``written`` (the object the API server returned) replaced
        the versions ``replaced`` (the one it was based on, and any it was retried on)."""
        self._superseded.update(replaced)
        if len(self._superseded) > MAX_SUPERSEDED:
            self._superseded.clear()  # a watch this far behind: let the precondition sort it out
        self._written = written

    def freshest(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The object a pass should start from: ``body`` (the watch's latest), unless it is a version this
        daemon's own status writes replaced, which the watch has not delivered yet; then the object its last
        write returned (a successor of ``body`` by the write's resourceVersion precondition).

        Without this, a pass right after a write (0.25 s later while a rollout is checked) started from the
        old status under load, and its write was refused as a conflict and the pass redone (issue #20)."""
        version = (body.get("metadata") or {}).get("resourceVersion")
        if self._written is None or not version:
            return body
        if version in self._superseded:
            return self._written
        if version == (self._written.get("metadata") or {}).get("resourceVersion"):
            # The watch caught up: the written object (a whole object as the API server returned it, about as
            # large as the watch's own copy) is not needed any more (issue #20, "Memory").
            self._superseded.clear()
            self._written = None
        return body

    def source(self, spec: PromptExperimentSpec) -> CanopySource:
        """The backend client for ``spec`` (already checked by the pass): the one kept, unless what it was made
        from changed; then a new one, and the old one is closed at the end of the pass (:meth:`end_pass`)."""
        if self.closed:
            raise RuntimeError(f"the session of {self.where} is closed")
        key = self._key_of(spec)
        if self._source is None or key != self._key:
            if self._source is not None:
                self._retired.append(self._source)
            self._source = self._open_source(spec)
            self._key = key
            self.opened += 1
        return self._source

    async def end_pass(self, *, failed: bool = False) -> None:
        """Close the clients a pass replaced; after a failed pass, the current one too (a fresh pool next pass).
        The pass's parsed models are dropped (:meth:`ParsedObject.end_pass`)."""
        self.parsed.end_pass()
        if failed and self._source is not None:
            self._retired.append(self._source)
            self._source, self._key = None, None
        retired, self._retired = self._retired, []
        for source in retired:
            await _close(source, self.where)

    async def aclose(self) -> None:
        """Close everything (the daemon stopped); idempotent."""
        self.closed = True
        self._deferred = None  # a restarted daemon starts from the stored status (the ``adopt`` plan)
        self.reads.forget()
        await self.end_pass()
        source, self._source = self._source, None
        if source is not None:
            await _close(source, self.where)


async def _close(source: CanopySource, where: str) -> None:
    try:
        await source.aclose()
    except Exception as exc:  # closing a pool must never fail a pass or a daemon's exit
        log.warning("closing the backend client of %s failed: %s", where, internal_error_message(exc))
