"""Giving freed memory back to the system after a burst (issue #20, "Memory").

A burst of new experiments runs hundreds of passes at once; each holds bodies, parsed values and models for
a moment. When the burst is over the memory is free again, but glibc's allocator keeps the free pages in its
heaps: at 500 experiments the idle operator stayed at 323 MiB resident, of which ``malloc_trim(0)`` gave back
109 MiB (``bench/reconcile_bench.py --trim-probe-dir``; a full garbage collection gave back nothing, so
this is free memory, not live objects).

:class:`MemoryTrimmer` asks glibc to return it as soon as a burst is over: every ``interval`` seconds in which
passes ran it reads the resident size (``/proc/self/statm``, a few microseconds), and when that grew by
``growth`` bytes or more since the last trim it runs one ``malloc_trim(0)`` in a worker thread (a few
milliseconds; the allocator's lock is held meanwhile, the event loop runs on). A steady operator, idle or
polling, trims nothing; one that just absorbed hundreds of new experiments is back near its floor seconds
later (it used to wait for a once-a-minute trim, so the idle window began at the burst's high-water mark).
Where the C library has no ``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Callable

log = logging.getLogger("canopy_operator")

TRIM_INTERVAL_SECONDS = 5.0
"""How often the resident size is looked at (only after passes ran)."""
TRIM_GROWTH_BYTES = 8 * 1024 * 1024
"""Growth since the last trim that makes the next look trim."""

Trim = Callable[[], int]
Resident = Callable[[], int]


def resident_bytes() -> int:
    """The process's resident memory (Linux ``/proc/self/statm``), or 0 where there is none."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


MALLOC_ARENAS = 2
"""glibc heaps (arenas) the process may use: the event loop's and one for the worker threads."""
_M_ARENA_MAX = -8
"""``mallopt``'s parameter number for the arena limit (glibc's ``malloc.h``)."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let glibc keep at most ``arenas`` heaps (as ``MALLOC_ARENA_MAX`` would); True when the C library took it.

    glibc gives threads heaps of their own, up to eight per core; the parses that run in worker threads (values
    files, large answers) each leave free memory in their heap that no other thread reuses. Call it before the
    first worker thread starts. Does nothing where the C library has no ``mallopt`` (musl, macOS)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def glibc_malloc_trim() -> Trim | None:
    """glibc's ``malloc_trim(0)`` (1 when memory was released), or None where the C library has none."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return lambda: int(function(0))


class MemoryTrimmer:
    """Trims after growth: :meth:`note_pass` counts passes, :meth:`run` looks once per interval that had any and
    trims when the resident size grew by ``growth`` bytes since the last trim (the first look always trims)."""

    def __init__(
        self,
        trim: Trim | None,
        interval: float = TRIM_INTERVAL_SECONDS,
        *,
        growth: int = TRIM_GROWTH_BYTES,
        resident: Resident = resident_bytes,
    ) -> None:
        self.trim = trim
        self.interval = interval
        self.growth = growth
        self.resident = resident
        self.passes = 0
        self.trims = 0
        self._task: asyncio.Task[None] | None = None

    def note_pass(self) -> None:
        self.passes += 1

    def start(self) -> None:
        if self.trim is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="canopy-memory-trim")

    async def run(self) -> None:
        trim, seen, baseline = self.trim, 0, None
        if trim is None:
            return
        while True:
            await asyncio.sleep(self.interval)
            if self.passes == seen:
                continue
            seen = self.passes
            if baseline is not None and self.resident() < baseline + self.growth:
                continue
            try:
                await asyncio.to_thread(trim)
            except Exception as exc:  # never let housekeeping stop the operator
                log.warning("giving memory back to the system failed: %s", type(exc).__name__)
                return
            self.trims += 1
            baseline = self.resident()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
