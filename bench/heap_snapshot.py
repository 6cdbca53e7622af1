"""Run a Python module with tracemalloc on; SIGUSR1 writes a heap snapshot (development aid of the benches).

Usage (what ``reconcile_bench.py --heap-dir`` runs)::

    python bench/heap_snapshot.py OUT.snapshot -m canopy_operator.cli run ...

The snapshot is written by the main thread on SIGUSR1 (first to ``OUT.snapshot.tmp``, then renamed, so a
reader never sees half of one); read it with ``python bench/heap_snapshot.py --top OUT.snapshot``. Tracing
costs CPU and memory of its own: figures of a traced run are for attribution, never for RESULTS.md.

With ``OUT`` ending in ``.json`` nothing is traced; SIGUSR1 writes the resident memory before and after a full
garbage collection and after glibc's ``malloc_trim(0)`` (how much of it is free memory the allocator keeps).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import runpy
import signal
import sys
import tempfile
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = 12


def _rss_kib() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _dump(path: str) -> None:
    tmp = path + ".tmp"
    if path.endswith(".json"):  # untraced: what a full collection and glibc's malloc_trim would give back
        before = _rss_kib()
        gc.collect()
        collected = _rss_kib()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = _rss_kib()
        figures = {"rss_kib": before, "after_gc": collected, "after_malloc_trim": trimmed, **_pymalloc_kib()}
        Path(tmp).write_text(json.dumps(figures))
    else:
        tracemalloc.take_snapshot().dump(tmp)
    os.replace(tmp, path)


PYMALLOC_LINES = {
    "# bytes in allocated blocks": "pymalloc_in_use_kib",
    "# bytes in available blocks": "pymalloc_free_blocks_kib",
}


def _pymalloc_kib() -> dict[str, int]:
    """Python's small-object allocator: memory its arenas hold, in use, and free inside them (its arenas are
    given back only when wholly empty, so free blocks in a partly used arena stay resident)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    figures: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name, value = name.strip(), value.strip().replace(",", "")
        if name in PYMALLOC_LINES and value.isdigit():
            figures[PYMALLOC_LINES[name]] = int(value) // 1024
        elif name.endswith("bytes/arena") and value.isdigit():
            figures["pymalloc_arenas_kib"] = int(value) // 1024
        elif name.endswith("unused pools * 16384 bytes") and value.isdigit():
            figures["pymalloc_unused_pools_kib"] = int(value) // 1024
    return figures


def top(path: str, limit: int = 40) -> None:
    snapshot = tracemalloc.Snapshot.load(path)
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    print(f"traced: {total / 2**20:.1f} MiB")
    for key in ("filename", "lineno"):
        print(f"\n-- by {key}")
        for stat in snapshot.statistics(key)[:limit]:
            print(f"{stat.size / 2**10:10.0f} KiB {stat.count:8d}  {stat.traceback[0]}")
    print("\n-- by traceback (top 15)")
    for stat in snapshot.statistics("traceback")[:15]:
        print(f"{stat.size / 2**10:10.0f} KiB {stat.count:8d}")
        for line in stat.traceback.format()[-16:]:
            print("    " + line)


def main() -> None:
    if sys.argv[1] == "--top":
        top(sys.argv[2])
        return
    out, flag, module, *rest = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: heap_snapshot.py OUT -m MODULE [ARGS...]")

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        try:
            _dump(out)
        except OSError as exc:  # raised here it would surface in whatever the subject was running
            print(f"heap_snapshot: cannot write {out}: {exc}", file=sys.stderr)

    if not out.endswith(".json"):
        tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, on_signal)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
