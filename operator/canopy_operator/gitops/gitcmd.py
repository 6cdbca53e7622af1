"""Run one git command (argument list, no shell) and translate its failure into a redacted domain error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path

from canopy_operator.core.redact import Redactor
from canopy_operator.gitops.errors import GitAuthError, GitError

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
#: Options that keep a stalled connection from hanging a reconcile and keep signing/hooks of users out.
SAFE_CONFIG = (
    "-c",
    "http.lowSpeedLimit=1000",
    "-c",
    "http.lowSpeedTime=30",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "credential.helper=",
)


class PushRejected(GitError):
    """Internal: the remote refused the push (someone pushed first); the caller fetches and retries."""


async def run_git(
    args: list[str],
    *,
    env: Mapping[str, str],
    redactor: Redactor,
    cwd: Path | None = None,
    time_limit: float = 120.0,
) -> str:
    """Stdout of ``git <args>``; raises ``GitAuthError``, ``PushRejected`` or ``GitError`` (all redacted)."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *SAFE_CONFIG,
        *args,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), time_limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise GitError(f"git {args[0]} timed out after {time_limit:.0f}s") from None
    if proc.returncode != 0:
        raise classify(args[0], err.decode("utf-8", "replace"), redactor)
    return out.decode("utf-8", "replace")


def classify(command: str, stderr: str, redactor: Callable[[str], str]) -> GitError:
    """The domain error for a failed git command, with the tail of stderr (redacted) as its message."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    detail = redactor(" | ".join(lines[-4:]) or "no error output")
    lowered = stderr.lower()
    if any(marker in lowered for marker in _AUTH_MARKERS):
        return GitAuthError(f"git {command}: the repository rejected the credentials ({detail})")
    if command == "push" and any(marker in lowered for marker in _REJECT_MARKERS):
        return PushRejected(f"git push rejected: {detail}")
    return GitError(f"git {command} failed: {detail}")
