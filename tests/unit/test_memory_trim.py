"""MemoryTrimmer: one trim per interval that had passes, none while nothing runs; glibc's function is found."""

from __future__ import annotations

import asyncio
import platform

import pytest

from canopy_operator.service.memory import MemoryTrimmer, glibc_malloc_trim


async def test_trims_once_per_interval_with_passes_and_never_while_idle() -> None:
    calls: list[int] = []

    def trim() -> int:
        calls.append(1)
        return 1

    trimmer = MemoryTrimmer(trim, interval=0.05)
    trimmer.start()
    try:
        await asyncio.sleep(0.2)
        assert calls == []  # no pass ran: nothing to give back
        for _ in range(50):
            trimmer.note_pass()
        await asyncio.sleep(0.12)
        assert len(calls) == 1  # many passes, one trim
        await asyncio.sleep(0.2)
        assert len(calls) == 1
    finally:
        await trimmer.aclose()
    assert trimmer.trims == 1


async def test_a_failing_trim_stops_the_trimmer_not_the_operator() -> None:
    def broken() -> int:
        raise OSError("no")

    trimmer = MemoryTrimmer(broken, interval=0.02)
    trimmer.start()
    trimmer.note_pass()
    task = trimmer._task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), timeout=10)  # the task ends by itself, without an exception
    assert trimmer.trims == 0
    await trimmer.aclose()


async def test_without_malloc_trim_nothing_is_started() -> None:
    trimmer = MemoryTrimmer(None)
    trimmer.start()
    assert trimmer._task is None
    await trimmer.aclose()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_malloc_trim_is_found_and_callable() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)


def test_the_arena_limit_is_taken_by_glibc_and_skipped_without_mallopt(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    from canopy_operator.service import memory

    if platform.libc_ver()[0] == "glibc":
        assert memory.limit_malloc_arenas(memory.MALLOC_ARENAS)

    class NoMallopt:
        def __init__(self, _name: object) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert memory.limit_malloc_arenas() is False
