"""What ends a daemon's sleep between passes early: a wake-up flag, and the sleep that waits on several.

An idle daemon sleeps the interval between passes, and wakes early when its spec changes, when the Deployment
whose rollout it waits for changes, or when it is stopped. The sleep was ``asyncio.wait`` over one task per
``asyncio.Event.wait()`` (and Kopf's stop flag made two more): five tasks made, scheduled and cancelled for every
pass of every experiment (issue #20, "CPU per pass"). :class:`Wake` is set like an ``asyncio.Event``, and
:func:`sleep_until` waits on any number of them with one future and one timer.
"""

from __future__ import annotations

import asyncio


class Wake:
    """A flag that ends the sleeps (:func:`sleep_until`) waiting on it at once when set, and any sleep begun while it
    is set."""

    __slots__ = ("_set", "_sleepers")

    def __init__(self) -> None:
        self._set = False
        self._sleepers: set[asyncio.Future[None]] = set()

    def set(self) -> None:
        self._set = True
        sleepers, self._sleepers = self._sleepers, set()
        for woken in sleepers:
            _wake(woken)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


async def sleep_until(deadline: float, *wakes: Wake) -> None:
    """Sleep until the event loop's clock reads ``deadline``, or until one of ``wakes`` is set (at once if one
    already is). Daemons that share a deadline (:func:`canopy_operator.core.status.aligned_pause`) wake in the same
    turn of the loop."""
    if any(wake.is_set() for wake in wakes):
        return
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    timer = loop.call_at(deadline, _wake, woken)
    for wake in wakes:
        wake._sleepers.add(woken)
    try:
        await woken
    finally:
        timer.cancel()
        for wake in wakes:
            wake._sleepers.discard(woken)
