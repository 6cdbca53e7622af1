"""MemoryTrimmer: one trim per interval that had passes, none while nothing runs; glibc's function is found."""

from __future__ import annotations

import asyncio
import platform

import pytest

from canopy_operator.service.memory import MemoryTrimmer, glibc_malloc_trim


async def test_trims_when_memory_was_freed_after_passes_and_never_while_steady_or_idle() -> None:
    calls: list[int] = []
    used = [100]  # bytes the allocator holds, as the fake mallinfo2 says

    def trim() -> int:
        calls.append(1)
        return 1

    trimmer = MemoryTrimmer(trim, interval=0.02, freed=8, in_use=lambda: used[0])
    trimmer.start()

    async def looks(n: int = 3) -> None:
        for _ in range(n):
            trimmer.note_pass()
            await asyncio.sleep(0.03)

    try:
        await asyncio.sleep(0.1)
        await looks()
        assert calls == []  # steady: passes run, nothing freed
        used[0] = 300  # a burst: memory grows, nothing to give back yet
        await looks()
        assert calls == []
        used[0] = 150  # the burst is over: 150 freed
        await asyncio.sleep(0.1)
        assert calls == []  # but no pass since: an idle operator trims nothing
        await looks()
        assert len(calls) == 1  # one trim, then steady again
        used[0] = 145
        await looks()
        assert len(calls) == 1  # freed less than the threshold since the trim
    finally:
        await trimmer.aclose()
    assert trimmer.trims == 1


async def test_without_mallinfo2_it_trims_once_per_twelve_looks_with_passes() -> None:
    calls: list[int] = []

    def trim() -> int:
        calls.append(1)
        return 1

    trimmer = MemoryTrimmer(trim, interval=0.01)
    trimmer.start()
    try:
        for _ in range(40):
            trimmer.note_pass()
            await asyncio.sleep(0.015)
    finally:
        await trimmer.aclose()
    assert 1 <= len(calls) <= 3


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_reports_what_its_allocations_hold() -> None:
    from canopy_operator.service.memory import glibc_in_use

    in_use = glibc_in_use()
    assert in_use is not None
    before = in_use()
    block = bytearray(64 * 2**20)  # a large block: mmapped, counted
    assert in_use() >= before + 60 * 2**20
    del block
    assert in_use() < before + 8 * 2**20


async def test_a_failing_trim_stops_the_trimmer_not_the_operator() -> None:
    def broken() -> int:
        raise OSError("no")

    trimmer = MemoryTrimmer(broken, interval=0.02, freed=0, in_use=lambda: 0)  # every look with passes trims
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
