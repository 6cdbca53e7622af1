"""MemoryTrimmer: one trim per interval that had passes, none while nothing runs; glibc's function is found."""

from __future__ import annotations

import asyncio
import platform

import pytest

from canopy_operator.service.memory import MemoryTrimmer, glibc_malloc_trim


async def test_trims_after_growth_with_passes_and_never_while_steady_or_idle() -> None:
    calls: list[int] = []
    rss = [300]  # MiB, as the fake /proc says

    def trim() -> int:
        calls.append(1)
        rss[0] = 200  # what the allocator gave back
        return 1

    trimmer = MemoryTrimmer(trim, interval=0.02, growth=8, resident=lambda: rss[0])
    trimmer.start()
    try:
        await asyncio.sleep(0.1)
        assert calls == []  # no pass ran: nothing to give back
        for _ in range(50):
            trimmer.note_pass()
        await asyncio.sleep(0.1)
        assert len(calls) == 1  # many passes, one trim (the first look trims)
        for _ in range(5):  # steady: passes run, the size stays below the last trim's + growth
            rss[0] = 207
            trimmer.note_pass()
            await asyncio.sleep(0.03)
        assert len(calls) == 1
        rss[0] = 260  # a burst
        await asyncio.sleep(0.1)
        assert len(calls) == 1  # grown, but no pass since the last look: an idle operator trims nothing
        trimmer.note_pass()
        await asyncio.sleep(0.1)
        assert len(calls) == 2
    finally:
        await trimmer.aclose()
    assert trimmer.trims == 2


def test_the_resident_size_is_read_from_proc() -> None:
    from canopy_operator.service.memory import resident_bytes

    if platform.system() == "Linux":
        assert 10 * 2**20 < resident_bytes() < 10 * 2**30


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
