"""Giving freed memory back to the system after a burst (issue #20, "Memory").

A burst of new experiments runs hundreds of passes at once; each holds bodies, parsed values and models for
a moment. When the burst is over the memory is free again, but glibc's allocator keeps the free pages in its
heaps: at 500 experiments the idle operator stayed at 323 MiB resident, of which ``malloc_trim(0)`` gave back
109 MiB (``bench/reconcile_bench.py --trim-probe-dir``; a full garbage collection gave back nothing, so
this is free memory, not live objects).

:class:`MemoryTrimmer` asks glibc to return it as soon as a burst is over: every ``interval`` seconds in which
passes ran it asks glibc how many bytes its allocations hold (``mallinfo2``, microseconds), and when that fell by
``freed`` bytes or more from the highest it saw since the last trim, it runs one ``malloc_trim(0)`` in a worker
thread (a few milliseconds; the allocator's lock is held meanwhile, the event loop runs on). A steady operator,
idle or polling, frees nothing and trims nothing; one that just absorbed hundreds of new experiments is back near
its floor seconds after the burst (a once-a-minute trim let the idle window begin at the burst's high-water mark;
watching the resident size instead missed the end of a burst, since freed memory does not shrink it). Where glibc
has no ``mallinfo2`` the trimmer trims once a minute in which passes ran; where the C library has no
``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("canopy_operator")

TRIM_INTERVAL_SECONDS = 5.0
"""How often the allocator is looked at (only after passes ran)."""
TRIM_FREED_BYTES = 8 * 1024 * 1024
"""Bytes freed since the highest use seen (since the last trim) that make a look trim."""
LOOKS_PER_BLIND_TRIM = 12
"""Without ``mallinfo2``: one trim per this many looks with passes (once a minute)."""

Trim = Callable[[], int]
InUse = Callable[[], int]


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc(name: str, argtypes: list[Any], restype: Any) -> Any | None:
    """The C library's function ``name``, typed, or None where the C library has none (musl, macOS)."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = restype
    return function


def glibc_in_use() -> InUse | None:
    """Bytes glibc's allocations hold now (``mallinfo2().uordblks`` plus mmapped blocks), or None without it."""
    function = _libc("mallinfo2", [], _MallInfo2)
    if function is None:
        return None

    def in_use() -> int:
        info = function()
        return int(info.uordblks) + int(info.hblkhd)

    return in_use


MALLOC_ARENAS = 2
"""glibc heaps (arenas) the process may use: the event loop's and one for the worker threads."""
_M_ARENA_MAX = -8
"""``mallopt``'s parameter number for the arena limit (glibc's ``malloc.h``)."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let glibc keep at most ``arenas`` heaps (as ``MALLOC_ARENA_MAX`` would); True when the C library took it.

    glibc gives threads heaps of their own, up to eight per core; the parses that run in worker threads (values
    files, large answers) each leave free memory in their heap that no other thread reuses. Call it before the
    first worker thread starts. Does nothing where the C library has no ``mallopt`` (musl, macOS)."""
    mallopt = _libc("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, arenas))


def glibc_malloc_trim() -> Trim | None:
    """glibc's ``malloc_trim(0)`` (1 when memory was released), or None where the C library has none."""
    function = _libc("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
    if function is None:
        return None
    return lambda: int(function(0))


class MemoryTrimmer:
    """Trims after memory was freed: :meth:`note_pass` counts passes, :meth:`run` looks once per interval that
    had any and trims when the allocator's use fell by ``freed`` bytes from its highest since the last trim."""

    def __init__(
        self,
        trim: Trim | None,
        interval: float = TRIM_INTERVAL_SECONDS,
        *,
        freed: int = TRIM_FREED_BYTES,
        in_use: InUse | None = None,
    ) -> None:
        self.trim = trim
        self.interval = interval
        self.freed = freed
        self.in_use = in_use
        self.passes = 0
        self.trims = 0
        self._task: asyncio.Task[None] | None = None

    def note_pass(self) -> None:
        self.passes += 1

    def start(self) -> None:
        if self.trim is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="canopy-memory-trim")

    async def run(self) -> None:
        trim, seen, looks, highest = self.trim, 0, 0, 0
        if trim is None:
            return
        while True:
            await asyncio.sleep(self.interval)
            if self.passes == seen:
                continue
            seen, looks = self.passes, looks + 1
            if self.in_use is not None:
                used = self.in_use()
                highest = max(highest, used)
                if highest - used < self.freed:
                    continue
                highest = used
            elif looks % LOOKS_PER_BLIND_TRIM:
                continue
            try:
                await asyncio.to_thread(trim)
            except Exception as exc:  # never let housekeeping stop the operator
                log.warning("giving memory back to the system failed: %s", type(exc).__name__)
                return
            self.trims += 1

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
