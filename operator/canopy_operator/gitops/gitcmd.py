"""Run one git command (argument list, no shell) within bounds, and translate its failure into a redacted error.

Bounds (security-model rule 3): a total deadline per command; at most :data:`MAX_STDOUT` bytes of output (more
is an error) and the last :data:`STDERR_TAIL` bytes of diagnostics kept; with a :class:`SizeGuard`, the
directory git writes into is measured while it runs and git is stopped as soon as it grows past the bound. git
runs in a process group of its own, so stopping it also stops its helpers (remote-http, index-pack, ssh).
Whatever the server said (``remote:`` lines) reaches the error message redacted, on one line and cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from canopy_operator.core.redact import Redactor
from canopy_operator.gitops.disk import tree_size
from canopy_operator.gitops.errors import GitAuthError, GitError, GitRepositoryTooLarge, brief

MAX_STDOUT = 1024 * 1024
STDERR_TAIL = 16 * 1024
DETAIL_LINES = 3
DETAIL_LIMIT = 300
"""The longest detail (server text included) a git error message carries."""

_AUTH_MARKERS = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "permission denied (publickey",
    "host key verification failed",
    "the requested url returned error: 401",
    "the requested url returned error: 403",
    "invalid username or password",
)
_REJECT_MARKERS = (
    "[rejected]",
    "[remote rejected]",
    "non-fast-forward",
    "fetch first",
    "failed to update ref",
    "cannot lock ref",
    "stale info",
)
#: Options that keep a stalled connection from hanging a reconcile, keep signing/hooks of users out, and send
#: credentials to the URL given only (no redirect to another host).
SAFE_CONFIG = (
    "-c",
    "http.lowSpeedLimit=1000",
    "-c",
    "http.lowSpeedTime=30",
    "-c",
    "http.followRedirects=false",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "credential.helper=",
    "-c",
    "submodule.recurse=false",
)


class PushRejected(GitError):
    """Internal: the remote refused the push (someone pushed first); the caller fetches and retries."""


@dataclass(frozen=True)
class SizeGuard:
    """Stop git when ``path`` grows past ``limit`` bytes (``message`` says what was too large)."""

    path: Path
    limit: int
    message: str
    interval: float = 0.2


class _TooMuchOutput(GitError):
    pass


async def run_git(
    args: list[str],
    *,
    env: Mapping[str, str],
    redactor: Redactor,
    cwd: Path | None = None,
    time_limit: float = 120.0,
    guard: SizeGuard | None = None,
) -> str:
    """Stdout of ``git <args>``; raises ``GitAuthError``, ``PushRejected``, ``GitRepositoryTooLarge`` or
    ``GitError`` (all redacted and short)."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *SAFE_CONFIG,
        *args,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out_task = asyncio.ensure_future(_head(proc.stdout, MAX_STDOUT, args[0], lambda: _kill(proc)))
    err_task = asyncio.ensure_future(_tail(proc.stderr, STDERR_TAIL))
    try:
        async with asyncio.timeout(time_limit):
            if guard is not None:
                await _watch(proc, guard)
            out = await out_task
            err = await err_task
            await proc.wait()
    except TimeoutError:
        raise GitError(f"git {args[0]} timed out after {time_limit:.0f}s") from None
    finally:
        if proc.returncode is None:
            _kill(proc)
            await proc.wait()
        for task in (out_task, err_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, GitError):
                await task
    if proc.returncode != 0:
        raise classify(args[0], err.decode("utf-8", "replace"), redactor)
    return out.decode("utf-8", "replace")


async def _head(stream: asyncio.StreamReader, limit: int, command: str, stop: Callable[[], None]) -> bytes:
    """All of stdout up to ``limit``; past it, git is stopped and the rest is read and dropped until the pipe
    closes (a reader that just stopped reading would leave the pipe open, and waiting for git would hang)."""
    data = bytearray()
    overflow = False
    while chunk := await stream.read(64 * 1024):
        if overflow:
            continue
        data += chunk
        if len(data) > limit:
            overflow = True
            data.clear()
            stop()
    if overflow:
        raise _TooMuchOutput(f"git {command} printed more than {limit // 1024} KiB")
    return bytes(data)


async def _tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    data = bytearray()
    while chunk := await stream.read(64 * 1024):
        data += chunk
        if len(data) > keep:
            del data[: len(data) - keep]
    return bytes(data)


async def _watch(proc: asyncio.subprocess.Process, guard: SizeGuard) -> None:
    """Until git exits, measure ``guard.path`` every ``guard.interval`` seconds; too large stops git."""
    waiting = asyncio.ensure_future(proc.wait())
    try:
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=guard.interval)
            if await asyncio.to_thread(tree_size, guard.path, guard.limit) > guard.limit:
                _kill(proc)
                raise GitRepositoryTooLarge(guard.message)
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting


def _kill(proc: asyncio.subprocess.Process) -> None:
    """Stop git and every helper it started (they share its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def classify(command: str, stderr: str, redactor: Callable[[str], str]) -> GitError:
    """The domain error for a failed git command; its detail is the last lines of stderr, redacted, on one line
    and at most :data:`DETAIL_LIMIT` characters (the server's ``remote:`` text included)."""
    lines = [line.strip() for line in redactor(stderr).strip().splitlines() if line.strip()]
    last = lines[-DETAIL_LINES:]
    room = DETAIL_LIMIT // max(1, len(last))
    detail = brief(" | ".join(brief(line, room - 3) for line in last), DETAIL_LIMIT) or "no error output"
    lowered = stderr.lower()
    if any(marker in lowered for marker in _AUTH_MARKERS):
        return GitAuthError(f"git {command}: the repository rejected the credentials ({detail})")
    if command == "push" and any(marker in lowered for marker in _REJECT_MARKERS):
        return PushRejected(f"git push rejected: {detail}")
    return GitError(f"git {command} failed: {detail}")
