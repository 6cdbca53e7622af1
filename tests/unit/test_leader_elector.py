"""Leader election, the shell (``handlers.leadership``): candidates over one in-memory Lease with resourceVersions.

Clocks are fake (each candidate's sleep moves its own clock), so a 15 s lease takes no time; the Lease store
refuses a write at a stale resourceVersion (409) exactly as the API server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from canopy_operator.core.leader import LeaseRecord, Timing
from canopy_operator.handlers import leadership, main
from canopy_operator.handlers.leadership import Elector, StandbyProbe, run_elected
from canopy_operator.k8s.errors import Conflict, Unavailable
from canopy_operator.k8s.lease import LeaseView, micro_time
from canopy_operator.service.settings import Settings
from canopy_operator.telemetry.metrics import Metrics

T = Timing()


class Store:
    """One Lease on a fake API server: a resourceVersion bumped on every write, 409 for a stale one."""

    def __init__(self) -> None:
        self.lease: LeaseView | None = None
        self.version = 0
        self.writes: list[LeaseRecord] = []
        self.fail: Exception | None = None
        self.hang = False

    async def _io(self) -> None:
        await asyncio.sleep(0)
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail

    def _write(self, record: LeaseRecord) -> LeaseView:
        self.version += 1
        self.lease = LeaseView(record, str(self.version))
        self.writes.append(record)
        return self.lease


class FakeLeases:
    """``k8s.lease.Leases`` over a :class:`Store`."""

    def __init__(self, store: Store, namespace: str = "canopy-system", name: str = "canopy-operator") -> None:
        self.store = store
        self.ref = f"{namespace}/{name}"

    async def get(self) -> LeaseView | None:
        await self.store._io()
        return self.store.lease

    async def create(self, record: LeaseRecord) -> LeaseView:
        await self.store._io()
        if self.store.lease is not None:
            raise Conflict("create Lease: already exists")
        return self.store._write(record)

    async def replace(self, current: LeaseView, record: LeaseRecord) -> LeaseView:
        await self.store._io()
        if self.store.lease is None or self.store.lease.resource_version != current.resource_version:
            raise Conflict("update Lease: the object has been modified")
        return self.store._write(record)


class Clock:
    """A candidate's monotonic clock; its sleeps move it forward at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._alarms: list[tuple[float, asyncio.Event]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        for at, alarm in self._alarms:
            if self.now >= at:
                alarm.set()
        await asyncio.sleep(0)

    async def reach(self, at: float) -> None:
        """Wait (really) until the clock has been moved to ``at``."""
        alarm = asyncio.Event()
        self._alarms.append((at, alarm))
        await asyncio.wait_for(alarm.wait(), 5)


def candidate(store: Store, name: str, clock: Clock, timing: Timing = T) -> Elector:
    return Elector(
        FakeLeases(store),  # type: ignore[arg-type]  # the same interface as k8s.lease.Leases
        name,
        timing,
        clock=clock,
        wall=lambda: datetime(2026, 5, 1, tzinfo=UTC),
        rand=lambda: 0.0,
        sleep=clock.sleep,
    )


async def test_the_first_candidate_creates_the_lease_and_the_second_stands_by() -> None:
    store, clock_a, clock_b = Store(), Clock(), Clock()
    a, b = candidate(store, "a", clock_a), candidate(store, "b", clock_b)
    assert await a.acquire(asyncio.Event())
    assert store.lease is not None
    assert store.lease.record.holder == "a"
    assert (await b.try_once()).action == "wait"
    assert b.holder == "a"
    assert b.last_renewed is None


async def test_a_standby_takes_over_only_after_the_holder_stops_renewing() -> None:
    store, clock_a, clock_b = Store(), Clock(), Clock()
    a, b = candidate(store, "a", clock_a), candidate(store, "b", clock_b)
    assert await a.acquire(asyncio.Event())
    for _ in range(10):  # a renews every 2 s: b, trying as often, never sees the lease expire
        clock_a.now += 2
        clock_b.now += 2
        assert (await a.try_once()).action == "renew"
        assert (await b.try_once()).action == "wait"
    # a is killed: b's clock runs on, the record stays as a last wrote it
    clock_b.now += 14
    assert (await b.try_once()).action == "wait"
    clock_b.now += 1
    taken = await b.try_once()
    assert taken.action == "acquire"
    assert store.lease is not None
    assert store.lease.record.holder == "b"
    assert store.lease.record.transitions == 1


async def test_of_two_candidates_racing_for_an_expired_lease_exactly_one_wins() -> None:
    store, clock = Store(), Clock()
    old = candidate(store, "old", clock)
    assert await old.acquire(asyncio.Event())
    b, c = candidate(store, "b", clock), candidate(store, "c", clock)
    await b.try_once()
    await c.try_once()
    clock.now += T.lease_duration
    current = store.lease
    original_get = FakeLeases.get

    async def both_read_the_same(self: FakeLeases) -> LeaseView | None:
        return current  # each reads the lease before either writes it

    FakeLeases.get = both_read_the_same  # type: ignore[method-assign]
    try:
        results = [await b.try_once(), await c.try_once()]
    finally:
        FakeLeases.get = original_get  # type: ignore[method-assign]
    assert [r.action for r in results] == ["acquire", "wait"]
    assert results[1].reason == "another replica wrote the lease first"
    assert store.lease is not None
    assert store.lease.record.holder == "b"
    assert c.last_renewed is None


async def test_a_graceful_stop_releases_the_lease_and_the_standby_takes_it_at_once() -> None:
    store, clock_a, clock_b = Store(), Clock(), Clock()
    a, b = candidate(store, "a", clock_a), candidate(store, "b", clock_b)
    assert await a.acquire(asyncio.Event())
    assert (await b.try_once()).action == "wait"
    await a.release()
    assert store.lease is not None
    assert store.lease.record.holder is None
    assert store.lease.record.duration == 1
    taken = await b.try_once()  # no waiting for the 15 s
    assert (taken.action, taken.reason) == ("acquire", "released")
    await a.release()  # not ours any more: nothing written
    assert store.lease.record.holder == "b"


async def test_release_of_a_lease_taken_meanwhile_writes_nothing() -> None:
    store, clock = Store(), Clock()
    a = candidate(store, "a", clock)
    assert await a.acquire(asyncio.Event())
    assert store.lease is not None
    store._write(LeaseRecord("b", 15, None, None, 1))
    writes = len(store.writes)
    await a.release()
    assert len(store.writes) == writes


async def test_the_holder_gives_up_when_another_took_the_lease() -> None:
    store, clock = Store(), Clock()
    a = candidate(store, "a", clock)
    assert await a.acquire(asyncio.Event())
    store._write(LeaseRecord("b", 15, None, None, 1))  # as if a had been paused for longer than the lease
    assert await asyncio.wait_for(a.keep(), 5) == "taken by b"
    assert a.last_renewed is None


async def test_the_holder_gives_up_at_the_renew_deadline_when_the_api_fails() -> None:
    store, clock = Store(), Clock()
    a = candidate(store, "a", clock)
    assert await a.acquire(asyncio.Event())
    acquired_at = clock.now
    store.fail = Unavailable("get Lease: 503")
    reason = await asyncio.wait_for(a.keep(), 5)
    assert reason == "not renewed within the renew deadline (10s)"
    assert clock.now - acquired_at >= T.renew_deadline
    assert clock.now - acquired_at <= T.renew_deadline + T.retry  # at most one try after the deadline,
    assert clock.now - acquired_at < T.lease_duration  # before anyone else may take over


async def test_a_renewal_that_hangs_is_bounded_by_the_renew_deadline() -> None:
    timing = Timing(lease_duration=3, renew_deadline=2, retry=1)
    store, clock = Store(), Clock()
    a = candidate(store, "a", clock, timing)
    assert await a.acquire(asyncio.Event())
    store.hang = True
    assert await asyncio.wait_for(a.keep(), 5) == "not renewed within the renew deadline (2s)"


async def test_the_holder_keeps_renewing_while_the_api_answers() -> None:
    store, clock = Store(), Clock()
    a = candidate(store, "a", clock)
    assert await a.acquire(asyncio.Event())
    keeper = asyncio.create_task(a.keep())
    await clock.reach(1000 + 60)
    keeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await keeper
    assert len(store.writes) >= 30  # one renewal per 2 s for a minute
    assert {w.holder for w in store.writes} == {"a"}


async def test_acquire_returns_false_when_stopped_while_standing_by() -> None:
    store, clock = Store(), Clock()
    holder = candidate(store, "a", clock)
    assert await holder.acquire(asyncio.Event())
    stopping = asyncio.Event()
    standby = candidate(store, "b", Clock())
    standby.sleep = lambda _seconds: asyncio.sleep(3600)  # a real wait: only the stop can end it
    task = asyncio.create_task(standby.acquire(stopping))
    await asyncio.sleep(0.01)
    assert not task.done()
    stopping.set()
    assert await asyncio.wait_for(task, 5) is False


async def test_api_errors_while_standing_by_are_logged_once_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = Store(), Clock()
    b = candidate(store, "b", clock)
    store.fail = Unavailable("get Lease: connection refused")
    stopping = asyncio.Event()
    task = asyncio.create_task(b.acquire(stopping))
    await clock.reach(1000 + 20)
    store.fail = None
    assert await asyncio.wait_for(task, 5) is True
    failures = [r for r in caplog.records if getattr(r, "event", "") == "leader_lease_failed"]
    assert len(failures) == 1


def test_microtime_has_six_fractional_digits_in_utc() -> None:
    assert micro_time(datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)) == "2026-05-01T12:00:00.000000Z"
    assert micro_time(None) is None


# -- the standby's probe -----------------------------------------------------------------------------------


async def _http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    writer.write_eof()  # a client that sent all it will: a partial request ends at once
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_the_standby_answers_the_liveness_probe() -> None:
    async with StandbyProbe("http://127.0.0.1:0/healthz") as probe:
        ok = await _http(probe.bound_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        missing = await _http(probe.bound_port, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        garbage = await _http(probe.bound_port, b"\x00\x01")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(ok.split(b"\r\n\r\n", 1)[1]) == {"standby": True}
    assert missing.startswith(b"HTTP/1.1 404")
    assert garbage == b""


def test_the_probe_takes_only_http_urls() -> None:
    with pytest.raises(ValueError, match="only http"):
        StandbyProbe("https://0.0.0.0:8080/healthz")


# -- the process: stand by, operate while holding the lease, release --------------------------------------


class FakeApi:
    closed = False

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Store:
    """``run_elected`` over an in-memory Lease and a fake API client."""
    store = Store()
    api = FakeApi()

    async def api_client(_kubeconfig: str | None) -> FakeApi:
        return api

    monkeypatch.setattr(leadership, "api_client", api_client)
    monkeypatch.setattr(leadership, "Leases", lambda _api, namespace, name: FakeLeases(store, namespace, name))
    return store


SETTINGS = Settings(leader_election=True, leader_election_namespace="canopy-system")


async def test_kopf_runs_only_while_the_lease_is_held_and_the_lease_is_released_after(store: Store) -> None:
    seen: list[str | None] = []

    async def operate() -> None:
        assert store.lease is not None
        seen.append(store.lease.record.holder)

    await asyncio.wait_for(run_elected(SETTINGS, Metrics(), operate, identity="me"), 5)
    assert seen == ["me"]
    assert store.lease is not None
    assert store.lease.record.holder is None  # released on the way out


async def test_a_standby_never_operates(store: Store) -> None:
    store._write(LeaseRecord("someone-else", 3600, None, None, 0))
    operated: list[bool] = []

    async def operate() -> None:
        operated.append(True)

    task = asyncio.create_task(run_elected(SETTINGS, Metrics(), operate, identity="me"))
    await asyncio.sleep(0.2)
    assert not operated
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert store.lease is not None
    assert store.lease.record.holder == "someone-else"


async def test_losing_the_lease_stops_acting_at_once(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    lost: list[str] = []
    cancelled = asyncio.Event()

    async def operate() -> None:
        try:
            store._write(LeaseRecord("thief", 15, None, None, 1))
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    fast = Timing(lease_duration=3, renew_deadline=2, retry=1)
    settings = Settings(leader_election=True, leader_election_namespace="ns", leader_timing=fast)
    await asyncio.wait_for(run_elected(settings, Metrics(), operate, identity="me", on_lost=lost.append), 10)
    assert lost == ["taken by thief"]
    assert cancelled.is_set()
    assert store.lease is not None
    assert store.lease.record.holder == "thief"  # nothing released: it was not ours


async def test_main_runs_kopf_under_the_election_when_it_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, Any] = {}

    async def fake_operator(**kwargs: Any) -> None:
        calls.update(kwargs)

    def fake_run_elected(
        settings: Settings, metrics: Metrics, operate: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        calls["metrics_is_memos"] = metrics
        return operate()

    monkeypatch.setattr(main, "configure_logging", lambda *a, **k: SimpleNamespace(redactor=None))
    monkeypatch.setattr(main, "run_elected", fake_run_elected)
    monkeypatch.setattr(kopf, "operator", fake_operator)
    monkeypatch.setattr(kopf, "run", lambda **_: pytest.fail("kopf.run without the election"))
    await asyncio.to_thread(main.run, Settings(leader_election=True), ["team-a"])
    assert calls["identity"].startswith("canopy-operator@")
    assert calls["standalone"] is True
    assert calls["namespaces"] == ["team-a"]
    assert "stop_flag" not in calls  # the signals are Kopf's while it runs
    assert calls["memo"]["metrics"] is calls["metrics_is_memos"]


async def test_a_stop_before_kopf_handles_signals_cancels_it_and_releases(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    stops: list[asyncio.Event] = []
    monkeypatch.setattr(leadership, "_on_stop_signals", stops.append)  # what SIGTERM would set
    cancelled = asyncio.Event()

    async def operate() -> None:  # Kopf starting up, its signal handlers not installed yet
        stops[0].set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await asyncio.wait_for(run_elected(SETTINGS, Metrics(), operate, identity="me"), 5)
    assert cancelled.is_set()
    assert store.lease is not None
    assert store.lease.record.holder is None
