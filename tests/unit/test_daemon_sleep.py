"""The reconcile daemon's wait between passes: it ends at once when woken or stopped, else after the delay; a long
one ends on the shared tick (``aligned_pause``)."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from kopf._cogs.aiokits.aioenums import FlagSetter  # the setter behind the stop flag Kopf hands to daemons

from canopy_operator.core.status import WAKE_TICK_SECONDS, aligned_pause
from canopy_operator.handlers.experiment import _woken_when_stopped
from canopy_operator.service.wake import Wake, sleep_until

LONG = 30.0


async def sleep(delay: float, *wakes: Wake) -> None:
    """A daemon's sleep of ``delay`` seconds from now."""
    await sleep_until(asyncio.get_running_loop().time() + delay, *wakes)


def stop_flag() -> tuple[FlagSetter[kopf.DaemonStoppingReason], kopf.DaemonStopped]:
    """A stop flag as Kopf gives it to an async daemon (its async waiter)."""
    setter: FlagSetter[kopf.DaemonStoppingReason] = FlagSetter()
    return setter, setter.async_waiter


async def test_sleep_ends_at_once_when_woken() -> None:
    wake = Wake()
    asyncio.get_running_loop().call_later(0.05, wake.set)
    await asyncio.wait_for(sleep(LONG, wake), timeout=5)


async def test_sleep_ends_at_once_when_the_daemon_is_stopped() -> None:
    setter, stopped = stop_flag()
    async with _woken_when_stopped(stopped) as stop:
        asyncio.get_running_loop().call_later(0.05, setter.set)
        await asyncio.wait_for(sleep(LONG, stop, Wake()), timeout=5)
        assert stop.is_set()


async def test_a_daemon_stopped_before_its_sleep_does_not_sleep() -> None:
    setter, stopped = stop_flag()
    async with _woken_when_stopped(stopped) as stop:
        setter.set()  # stopped during the pass, before the stop watcher ran
        await asyncio.wait_for(sleep(LONG, stop), timeout=5)


async def test_the_stop_watcher_is_gone_when_the_daemon_ends() -> None:
    _, stopped = stop_flag()
    before = len(asyncio.all_tasks())
    async with _woken_when_stopped(stopped):
        assert len(asyncio.all_tasks()) > before
    assert len(asyncio.all_tasks()) == before


async def test_sleep_lasts_the_delay_otherwise() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sleep(0.3, Wake(), Wake())
    assert loop.time() - started >= 0.29


async def test_sleep_ends_when_any_of_its_wake_events_is_set() -> None:
    spec_changed, deployment_changed = Wake(), Wake()
    asyncio.get_running_loop().call_later(0.05, deployment_changed.set)
    await asyncio.wait_for(sleep(LONG, spec_changed, deployment_changed), timeout=5)
    assert not spec_changed.is_set()


async def test_an_event_set_before_the_sleep_ends_it_at_once() -> None:
    changed = Wake()
    changed.set()  # a change during the pass: the daemon looks again at once, it does not sleep through it
    await asyncio.wait_for(sleep(LONG, changed), timeout=5)


async def test_one_wake_ends_every_sleep_waiting_on_it_and_none_is_left_registered() -> None:
    shared, own = Wake(), Wake()
    sleepers = [asyncio.ensure_future(sleep(LONG, shared, own)) for _ in range(3)]
    await asyncio.sleep(0)
    shared.set()
    await asyncio.wait_for(asyncio.gather(*sleepers), timeout=5)
    assert not own._sleepers
    assert not shared._sleepers


async def test_a_cancelled_sleep_leaves_nothing_registered() -> None:
    wake = Wake()
    sleeper = asyncio.ensure_future(sleep(LONG, wake))
    await asyncio.sleep(0)
    assert wake._sleepers
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert not wake._sleepers


async def test_a_wake_cleared_after_it_was_set_does_not_end_the_next_sleep() -> None:
    wake = Wake()
    wake.set()
    wake.clear()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sleep(0.2, wake)
    assert loop.time() - started >= 0.19


@pytest.mark.parametrize("now", [0.0, 12.3, 1000.49, 1000.51, 98765.999])
@pytest.mark.parametrize("pause", [10.0, 28.6, 30.0, 31.49, 300.0])
def test_a_long_sleep_ends_on_the_shared_tick_within_half_a_tick(now: float, pause: float) -> None:
    aligned = aligned_pause(now, pause)
    assert abs(aligned - pause) <= WAKE_TICK_SECONDS / 2 + 1e-9
    end = (now + aligned) / WAKE_TICK_SECONDS
    assert end == pytest.approx(round(end), abs=1e-6)


def test_daemons_due_within_the_same_tick_wake_together() -> None:
    ends = {round(now + aligned_pause(now, 30.0 + offset), 6) for now, offset in [(5.0, 0.2), (5.1, 0.0), (4.8, 0.55)]}
    assert ends == {35.0}


@pytest.mark.parametrize("pause", [0.0, 0.25, 0.5, 2.0, 9.99])
def test_a_short_sleep_ends_exactly_when_asked(pause: float) -> None:
    assert aligned_pause(123.456, pause) == pause


def test_aligning_keeps_the_mean_period() -> None:
    """Rounded to the nearest tick, not up: over every phase of the clock the mean pause is the pause asked."""
    phases = [i / 1000 for i in range(1000)]
    mean = sum(aligned_pause(100.0 + phase, 30.0) for phase in phases) / len(phases)
    assert mean == pytest.approx(30.0, abs=0.01)


async def test_daemons_sharing_a_deadline_wake_in_the_same_turn_of_the_loop() -> None:
    """The aligned deadline is the timer's own (``call_at``), not a delay measured again a moment later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.1
    first = asyncio.ensure_future(sleep_until(deadline, Wake()))
    await asyncio.sleep(0.01)  # the second daemon goes to sleep a little later, for the same deadline
    second = asyncio.ensure_future(sleep_until(deadline, Wake()))
    await asyncio.wait([first, second], return_when=asyncio.FIRST_COMPLETED)
    assert first.done()
    assert second.done()
    assert loop.time() >= deadline
