"""The reconcile daemon's wait between passes: it ends at once when woken or stopped, else after the delay."""

from __future__ import annotations

import asyncio

import kopf
from kopf._cogs.aiokits.aioenums import FlagSetter  # the setter behind the stop flag Kopf hands to daemons

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
