"""The reconcile daemon's wait between passes: it ends at once when woken or stopped, else after the delay; a long
one ends on the shared tick (``aligned_pause``)."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from kopf._cogs.aiokits.aioenums import FlagSetter  # the setter behind the stop flag Kopf hands to daemons

from canopy_operator.core.status import WAKE_TICK_SECONDS, aligned_pause
from canopy_operator.handlers.experiment import _sleep

LONG = 30.0


def stop_flag() -> tuple[FlagSetter[kopf.DaemonStoppingReason], kopf.DaemonStopped]:
    """A stop flag as Kopf gives it to an async daemon (its async waiter)."""
    setter: FlagSetter[kopf.DaemonStoppingReason] = FlagSetter()
    return setter, setter.async_waiter


async def test_sleep_ends_at_once_when_woken() -> None:
    _, stopped = stop_flag()
    wake = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, wake.set)
    await asyncio.wait_for(_sleep(stopped, LONG, wake), timeout=5)


async def test_sleep_ends_at_once_when_the_daemon_is_stopped() -> None:
    setter, stopped = stop_flag()
    asyncio.get_running_loop().call_later(0.05, setter.set)
    await asyncio.wait_for(_sleep(stopped, LONG, asyncio.Event()), timeout=5)


async def test_sleep_lasts_the_delay_otherwise() -> None:
    _, stopped = stop_flag()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _sleep(stopped, 0.3, asyncio.Event(), asyncio.Event())
    assert loop.time() - started >= 0.29


async def test_sleep_ends_when_any_of_its_wake_events_is_set() -> None:
    _, stopped = stop_flag()
    spec_changed, deployment_changed = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, deployment_changed.set)
    await asyncio.wait_for(_sleep(stopped, LONG, spec_changed, deployment_changed), timeout=5)
    assert not spec_changed.is_set()


async def test_an_event_set_before_the_sleep_ends_it_at_once() -> None:
    _, stopped = stop_flag()
    changed = asyncio.Event()
    changed.set()  # a change during the pass: the daemon looks again at once, it does not sleep through it
    await asyncio.wait_for(_sleep(stopped, LONG, changed), timeout=5)


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
