"""Stop every running control plane at interpreter exit and on SIGTERM/SIGHUP, and sweep leftovers.

SIGINT needs nothing: it raises KeyboardInterrupt, which unwinds into ``atexit``. A process killed by
SIGKILL cannot clean up; its children die with it (parent-death signal, see ``processes``) and its temp
dir is removed by the next control plane's :func:`sweep_stale_dirs`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Protocol

DIR_PREFIX = "canopy-envtest-"
OWNER_FILE = "owner.pid"


class Stoppable(Protocol):
    def stop(self) -> None: ...


_live: list[Stoppable] = []
_lock = threading.Lock()
_installed = False


def _stop_all() -> None:
    with _lock:
        planes = list(_live)
    for plane in reversed(planes):
        with contextlib.suppress(Exception):
            plane.stop()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stop_all()
    # Then die of the same signal, as if we had never caught it.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(_stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # Never replace a handler someone else installed (pytest, Kopf, an application).
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_signal)


def register(plane: Stoppable) -> None:
    with _lock:
        _install_handlers()
        if plane not in _live:
            _live.append(plane)


def unregister(plane: Stoppable) -> None:
    with _lock, contextlib.suppress(ValueError):
        _live.remove(plane)


def make_temp_dir(root: Path | None = None) -> Path:
    """A fresh private temp dir named after this process, so leftovers can be attributed."""
    path = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=root))
    (path / OWNER_FILE).write_text(str(os.getpid()), encoding="ascii")
    return path


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned_dirs(base: Path, prefix: str, owner_file: str = OWNER_FILE) -> list[Path]:
    """Directories ``base/<prefix>*`` whose owner (the pid in ``owner_file``) is another process that is gone."""
    found: list[Path] = []
    for path in base.glob(f"{prefix}*"):
        try:
            owner = int((path / owner_file).read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and not pid_alive(owner):
            found.append(path)
    return found


def sweep_stale_dirs(root: Path | None = None) -> list[Path]:
    """Remove temp dirs whose owning process is gone; returns what was removed."""
    removed = orphaned_dirs(Path(root or tempfile.gettempdir()), DIR_PREFIX)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
