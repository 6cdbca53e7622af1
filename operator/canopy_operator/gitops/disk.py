"""The clone cache on disk: measured with a bounded walk, and which clones to drop when it is over its budget.

Layout: ``<cache>/namespaces/<namespace>/<key>/``, one directory per namespace (a repository URL in one namespace never
reuses another namespace's clone or the credentials it was fetched with), one clone per repository, branch and
values file in it. Each use touches ``.git/canopy-last-used``; when the whole cache exceeds its budget, the least
recently used clones not in use are removed until it fits (:func:`eviction_order`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MAX_ENTRIES = 200_000
"""A walk that visits more entries than this stops and reports the tree as too large."""
USED_MARKER = "canopy-last-used"
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def tree_size(path: Path, limit: int, max_entries: int = MAX_ENTRIES) -> int:
    """Bytes under ``path`` (sizes as ``lstat`` reports them; symbolic links are not followed). The walk stops as
    soon as the sum passes ``limit`` (or it visited ``max_entries`` entries) and returns a number above ``limit``."""
    total = 0
    seen = 0
    stack: list[str | Path] = [path]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                seen += 1
                if seen > max_entries:
                    return max(total, limit + 1)
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                total += info.st_size
                if total > limit:
                    return total
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total


def human(size: int) -> str:
    """``64 MiB``, ``1 MiB``, ``48 KiB``, ``512 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def clones(root: Path) -> list[Path]:
    """Every clone directory under ``root`` (``<root>/<namespace>/<key>``)."""
    found: list[Path] = []
    for namespace in _dirs(root):
        found.extend(_dirs(namespace))
    return found


def _dirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    except (FileNotFoundError, NotADirectoryError):
        return []


def remove(path: Path) -> None:
    """Remove a clone (or stray entry) and everything under it."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def touch(clone: Path) -> None:
    """Record a use of ``clone`` (its marker's mtime survives a restart of the operator)."""
    marker = clone / ".git" / USED_MARKER
    try:
        marker.touch()
    except FileNotFoundError:
        return


def last_used(clone: Path) -> float:
    for candidate in (clone / ".git" / USED_MARKER, clone):
        try:
            return candidate.stat().st_mtime
        except FileNotFoundError:
            continue
    return 0.0


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int
    used: tuple[float, float]
    """Sort key: this process's use counter (0 when unused since start), then the marker's mtime."""
    busy: bool
    """In use now (its lock is held): never removed."""


def eviction_order(entries: Iterable[CacheEntry], budget: int) -> list[Path]:
    """The clones to remove, least recently used first, until the rest fits ``budget`` (busy ones stay)."""
    items = list(entries)
    total = sum(e.size for e in items)
    doomed: list[Path] = []
    for entry in sorted(items, key=lambda e: e.used):
        if total <= budget:
            break
        if entry.busy:
            continue
        doomed.append(entry.path)
        total -= entry.size
    return doomed
