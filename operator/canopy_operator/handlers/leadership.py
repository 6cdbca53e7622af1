"""Leader election: of the replicas sharing one Lease, only its holder runs Kopf (docs/high-availability.md).

A replica with ``CANOPY_LEADER_ELECTION`` on starts as a candidate: it answers the liveness probe (and serves
its metrics) but runs no handler, no daemon, no Kopf at all, so it writes nothing to any experiment, not even a
finalizer or an annotation. It tries the Lease every retry period (about 2 s). Once it holds it, it starts Kopf
and renews the Lease every retry period:

- a holder that cannot renew within the renew deadline (10 s) exits at once (exit status 1, as client-go's
  controllers do; the kubelet restarts it as a candidate), 5 s before any other replica may see the Lease as
  expired (15 s), so two replicas never act at the same time;
- a holder that is stopped (SIGTERM) stops Kopf gracefully, then releases the Lease: another replica takes
  over at its next try instead of after the whole lease duration;
- a holder killed outright (SIGKILL, OOM, node loss) is replaced once the Lease expires (15 s plus a try).

What to write is decided in :mod:`canopy_operator.core.leader` (pure, client-go's rules); the Lease is read and
written with resourceVersion preconditions in :mod:`canopy_operator.k8s.lease`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import random
import secrets
import signal
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from canopy_operator.core.leader import Decision, Observation, Timing, decide, observe, renew_budget, retry_delay
from canopy_operator.core.leader import release as released_record
from canopy_operator.k8s.client import api_client, load_credentials
from canopy_operator.k8s.errors import Conflict, KubeError
from canopy_operator.k8s.lease import Leases
from canopy_operator.service.settings import Settings
from canopy_operator.telemetry.logs import log_event
from canopy_operator.telemetry.metrics import Metrics

log = logging.getLogger("canopy_operator.leader")
LOST_EXIT_CODE = 1
RELEASE_DEADLINE = 5.0
"""Seconds a graceful stop spends at most on releasing the Lease (after that, it expires by itself)."""
PROBE_READ_DEADLINE = 5.0
PROBE_REQUEST_LIMIT = 16 * 1024


def lease_identity() -> str:
    """This process's name in the Lease: the host (the pod's name) and a random suffix, unique per process, so a
    restarted container is a new candidate rather than the old holder (as client-go's ``hostname_uuid``)."""
    return f"{platform.node() or 'unknown-host'}_{secrets.token_hex(4)}"


class Elector:
    """One candidate for one Lease: acquire it, keep it, release it. Clocks and randomness are injectable."""

    def __init__(
        self,
        leases: Leases,
        identity: str,
        timing: Timing,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.leases = leases
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self.wall = wall
        self.rand = rand
        self.sleep = sleep
        self.observed: Observation | None = None
        self.last_renewed: float | None = None
        """Our clock just before our last successful write of the Lease (None: we do not hold it)."""
        self._waiting_for: str | None = None
        self._failing: str | None = None

    @property
    def holder(self) -> str | None:
        """Who held the Lease when we last read it."""
        return self.observed.record.holder if self.observed is not None else None

    async def try_once(self) -> Decision:
        """Read the Lease, decide (create, acquire, renew or wait) and write; the decision carried out.

        A write another replica beat (409 Conflict) is a ``wait``; other API errors raise ``KubeError``."""
        current = await self.leases.get()
        now = self.clock()
        self.observed = (
            None if current is None else observe(self.observed, current.record, current.resource_version, now)
        )
        decision = decide(self.identity, self.observed, now, self.wall(), self.timing)
        if decision.record is None:
            return decision
        try:
            if current is None:
                written = await self.leases.create(decision.record)
            else:
                written = await self.leases.replace(current, decision.record)
        except Conflict:
            return Decision("wait", None, "another replica wrote the lease first")
        # `now` was taken before the write: the others' clocks start when they see it, later, so we stop first.
        self.observed = Observation(written.record, now, written.resource_version)
        self.last_renewed = now
        return decision

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Try every retry period until we hold the Lease (True) or ``stopping`` is set (False)."""
        while not stopping.is_set():
            try:
                decision = await self.try_once()
            except KubeError as exc:
                self._failed(exc)
            else:
                self._failing = None
                if decision.action != "wait":
                    log_event(
                        log,
                        "leader_elected",
                        self.leases.ref,
                        identity=self.identity,
                        reason=decision.reason,
                        transitions=decision.record.transitions if decision.record else None,
                        message=f"became the leader: lease {self.leases.ref} taken as {self.identity} "
                        f"({decision.reason})",
                    )
                    return True
                if self.holder != self._waiting_for:
                    self._waiting_for = self.holder
                    log_event(
                        log,
                        "leader_waiting",
                        self.leases.ref,
                        identity=self.identity,
                        holder=self.holder,
                        message=f"standing by: {decision.reason}",
                    )
            await self._pause(retry_delay(self.timing, self.rand()), stopping)
        return False

    async def _pause(self, delay: float, stopping: asyncio.Event) -> None:
        """Sleep ``delay`` seconds or until ``stopping`` is set."""
        waiters = {asyncio.ensure_future(self.sleep(delay)), asyncio.ensure_future(stopping.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def keep(self) -> str:
        """Renew the Lease every retry period while we hold it; returns why it was lost (it never returns else).

        Each renewal may take what is left of the renew deadline; the deadline is checked after every try, so a
        holder that cannot renew gives up at most one try after the deadline, well before the lease expires."""
        while True:
            await self.sleep(self.timing.retry)
            if self.last_renewed is None:
                return "the lease was not held"
            budget = renew_budget(self.last_renewed, self.clock(), self.timing)
            if budget > 0:
                try:
                    async with asyncio.timeout(budget):
                        decision = await self.try_once()
                except TimeoutError:
                    pass
                except KubeError as exc:
                    self._failed(exc)
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # we are being stopped
                    # else a task the client made under us was cancelled (Kopf's shutdown): just a failed try
                else:
                    self._failing = None
                    if decision.action == "wait" and self.holder not in (None, self.identity):
                        self.last_renewed = None
                        return f"taken by {self.holder}"
            if renew_budget(self.last_renewed, self.clock(), self.timing) <= 0:
                return f"not renewed within the renew deadline ({self.timing.renew_deadline}s)"

    async def release(self) -> None:
        """Give the Lease up (graceful stop) so another replica takes over at once; bounded, errors logged."""
        if self.last_renewed is None:
            return
        self.last_renewed = None
        try:
            async with asyncio.timeout(RELEASE_DEADLINE):
                current = await self.leases.get()
                record = released_record(current.record, self.identity, self.wall()) if current else None
                if current is None or record is None:
                    return
                await self.leases.replace(current, record)
        except (KubeError, TimeoutError) as exc:
            log_event(
                log,
                "leader_release_failed",
                self.leases.ref,
                level=logging.WARNING,
                message=f"lease {self.leases.ref} not released ({exc}); it expires in {self.timing.lease_duration}s",
            )
            return
        log_event(log, "leader_released", self.leases.ref, identity=self.identity)

    def _failed(self, exc: KubeError) -> None:
        text = str(exc)
        if text != self._failing:  # once per distinct error, not every 2 s
            self._failing = text
            log_event(log, "leader_lease_failed", self.leases.ref, level=logging.WARNING, message=text)


class StandbyProbe:
    """Answers the liveness URL (``CANOPY_LIVENESS``, Kopf's while it runs) while this replica stands by, so
    the kubelet keeps it and counts it ready: 200 on the probe's path, 404 elsewhere. Plain asyncio streams."""

    def __init__(self, endpoint: str) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme != "http":
            raise ValueError(f"unsupported liveness endpoint {endpoint!r}: only http:// (as Kopf)")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StandbyProbe:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=PROBE_REQUEST_LIMIT)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def bound_port(self) -> int:
        assert self._server is not None, "not serving"
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(PROBE_READ_DEADLINE):
                head = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), "", ""]
            ok = method in ("GET", "HEAD") and urllib.parse.urlsplit(target).path == self.path
            body = b'{"standby": true}\n' if ok else b"not found\n"
            status = b"200 OK" if ok else b"404 Not Found"
            reply = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            writer.write(reply % (status, len(body)) + (body if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def standing_by(settings: Settings, metrics: Metrics) -> AsyncIterator[None]:
    """The probe and the metrics endpoint while this replica waits; both ports are free again on exit (Kopf's
    probe and the operator's metrics endpoint take them over)."""
    server = metrics.start_server(settings.metrics_port, settings.metrics_addr) if settings.metrics_port else None
    try:
        if settings.liveness:
            async with StandbyProbe(settings.liveness):
                yield
        else:
            yield
    finally:
        if server is not None:
            server.close()


def _exit_lost(reason: str) -> None:
    """Stop acting now: no cleanup, no graceful stop (a daemon could still write while it ends)."""
    log.critical("lost the leader lease (%s): exiting at once", reason, extra={"event": "leader_lost"})
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(LOST_EXIT_CODE)


def _why_lost(keeper: asyncio.Task[str]) -> str:
    if keeper.cancelled():
        return "the lease keeper was cancelled"
    error = keeper.exception()
    return keeper.result() if error is None else f"the lease keeper failed: {type(error).__name__}: {error}"


def _on_stop_signals(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread (tests): no signals
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)


async def lease_namespace(settings: Settings) -> str:
    """Where the Lease is: the setting (or POD_NAMESPACE), else the service account's or context's namespace."""
    if settings.leader_election_namespace:
        return settings.leader_election_namespace
    return (await load_credentials(settings.kubeconfig)).default_namespace or "default"


async def run_elected(
    settings: Settings,
    metrics: Metrics,
    operate: Callable[[], Coroutine[Any, Any, None]],
    *,
    identity: str | None = None,
    on_lost: Callable[[str], None] = _exit_lost,
) -> None:
    """Stand by until this process holds the Lease, then ``operate`` (Kopf) while renewing it; release it when
    ``operate`` ends. ``on_lost`` runs if the Lease is lost (by default: exit at once).

    SIGTERM and SIGINT end the standing by; once Kopf runs they are Kopf's (it installs its own handlers and
    stops gracefully). One arriving in between, before Kopf took them over, cancels Kopf, which has hardly
    started. No stop flag is handed to Kopf: its waiter would outlive a signal-initiated stop by 5 s."""
    identity = identity or lease_identity()
    stopping = asyncio.Event()
    _on_stop_signals(stopping)
    api = await api_client(settings.kubeconfig)
    try:
        leases = Leases(api, await lease_namespace(settings), settings.leader_election_lease)
        elector = Elector(leases, identity, settings.leader_timing)
        log_event(
            log,
            "leader_election_started",
            leases.ref,
            identity=identity,
            message=f"standing for election as {identity} (lease {leases.ref})",
        )
        async with standing_by(settings, metrics):
            if not await elector.acquire(stopping):
                return
        # These exist before Kopf starts, so Kopf's shutdown leaves them alone (it cancels only newer tasks).
        keeper = asyncio.create_task(elector.keep(), name="leader lease keeper")
        early_stop = asyncio.create_task(stopping.wait(), name="stop before Kopf handles signals")
        operator = asyncio.create_task(operate(), name="operator")
        try:
            await asyncio.wait({keeper, early_stop, operator}, return_when=asyncio.FIRST_COMPLETED)
            if keeper.done() and not operator.done():
                on_lost(_why_lost(keeper))
                return  # only when on_lost does not exit (tests): the operator is cancelled below
            if not operator.done():
                operator.cancel()
            await asyncio.wait({operator})
            if not operator.cancelled():
                operator.result()  # Kopf's own failure, if it failed
        finally:
            for task in (keeper, early_stop, operator):
                task.cancel()
            await asyncio.gather(keeper, early_stop, operator, return_exceptions=True)
            _on_stop_signals(stopping)  # Kopf's handlers are gone with it: a second SIGTERM must not error
            await elector.release()
    finally:
        await api.close()
