"""The experiments' Kubernetes Events, posted one at a time in the background (issue #20).

A pass hands its events (``TestStarted``, ``ConfigDelivered``, ``ConfigVerified``, ...) to the process's
:class:`EventPoster` and goes on; one task posts them in the order they came, one request at a time, as client-go's
event broadcaster does. An event is what the operator tells people, not what it works from, so it never
competes with the work: when 500 experiments start at once, their 1500 events used to be posted by as many
concurrent Kopf workers in the middle of the burst, a fifth of the API server's CPU and a sixth of the operator's
while experiments waited for their config and status writes. Now they follow at the pace the API server answers.

Bounds: at most ``QUEUE_LIMIT`` events wait (one more is dropped, counted and logged, never blocking a pass);
a refused or failed post is logged and dropped (a 429 is sent again by the gateway, within its deadline), as Kopf
does; at shutdown the queue is drained for at most ``DRAIN_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("canopy_operator")

COMPONENT = "canopy-operator"
"""``source.component`` and ``reportingComponent`` of every event (the "From" column of ``kubectl describe``)."""
QUEUE_LIMIT = 10_000
"""Events that may wait to be posted (about 3 per experiment in a burst of starts); more are dropped."""
DRAIN_SECONDS = 5.0
MESSAGE_LIMIT = 1024


class EventApi(Protocol):
    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class ObjectRef:
    """The object an event is about (``involvedObject``)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectRef:
        meta = body.get("metadata") or {}
        return cls(
            str(body.get("apiVersion") or ""),
            str(body.get("kind") or ""),
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            str(meta.get("uid") or ""),
        )


@dataclass(frozen=True)
class Queued:
    ref: ObjectRef
    type: str
    reason: str
    message: str
    at: datetime


def event_body(event: Queued, instance: str) -> dict[str, Any]:
    """A core/v1 Event about ``event.ref`` (the fields ``kubectl describe`` and ``kubectl get events`` show)."""
    ref = event.ref
    stamp = event.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
        "involvedObject": {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "uid": ref.uid,
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:MESSAGE_LIMIT],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def default_instance() -> str:
    """The pod's name (``HOSTNAME``), else the host's."""
    return (os.environ.get("HOSTNAME") or socket.gethostname() or COMPONENT)[:128]


class EventPoster:
    """One queue and one task posting its events in order (module docstring)."""

    def __init__(
        self,
        api: EventApi,
        *,
        limit: int = QUEUE_LIMIT,
        instance: str | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.limit = limit
        self.instance = instance or default_instance()
        self.now = now
        self._queue: deque[Queued] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        """Set while nothing waits and nothing is being posted."""
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.posted = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event poster")

    def post(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Queue one event (never waits); dropped, counted and logged when ``limit`` events already wait, or
        after :meth:`aclose`."""
        if self.closed:
            self.dropped += 1
            log.info("event %s of %s/%s not posted: the operator is stopping", reason, ref.namespace, ref.name)
            return
        if len(self._queue) >= self.limit:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%d events dropped: more than %d waited to be posted", self.dropped, self.limit)
            return
        self._queue.append(Queued(ref, type_, reason, message, self.now()))
        self._idle.clear()
        self._ready.set()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            await self._post(self._queue.popleft())

    async def _post(self, event: Queued) -> None:
        try:
            await self.api.create_event(event.ref.namespace, event_body(event, self.instance))
        except Exception as exc:  # an event is not worth failing anything for
            self.failed += 1
            log.warning("event %s of %s/%s not posted: %s", event.reason, event.ref.namespace, event.ref.name, exc)
        else:
            self.posted += 1

    async def aclose(self, drain: float = DRAIN_SECONDS) -> None:
        """Post what waits for at most ``drain`` seconds, then stop (the rest is dropped, and logged)."""
        self.closed = True
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain):
                await self._idle.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._queue:
            log.warning("%d events not posted at shutdown", len(self._queue))
            self._queue.clear()
