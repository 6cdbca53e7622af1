"""Git delivery's domain errors; every message passes through :mod:`canopy_operator.core.redact` first, and text
from a Git server or forge through :func:`brief` (security-model rule 4: status carries short structured
messages, never long remote text)."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"\s+")


def brief(text: str, limit: int = 200) -> str:
    """``text`` on one line, without control characters or terminal escapes, cut to ``limit`` bytes (UTF-8)."""
    flat = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    raw = flat.encode("utf-8")
    if len(raw) <= limit:
        return flat
    return raw[: max(0, limit - 3)].decode("utf-8", "ignore").rstrip() + "..."


class GitError(Exception):
    """Git delivery failed; the message is already redacted."""

    reason = "GitFailed"


class GitAuthError(GitError):
    """The repository or forge rejected the credentials (or none were given)."""

    reason = "GitAuthFailed"


class GitCredentialsError(GitError):
    """The credentials Secret named in the spec is missing or holds neither a password/token nor an SSH key."""

    reason = "GitCredentialsMissing"


class CredentialsNotAllowed(GitCredentialsError):
    """The credentials Secret did not opt in for this URL (label, allowed URL prefixes, plain HTTP, length)."""

    reason = "CredentialsNotAllowed"


class GitRepositoryNotAllowed(GitError):
    """The repository URL is one the operator does not clone (``file://`` without the operator's flag, the
    operator's own clone cache, a local path)."""

    reason = "GitRepositoryNotAllowed"


class GitRepositoryTooLarge(GitError):
    """The clone or the values file exceeds the operator's bound; nothing more was read."""

    reason = "GitRepositoryTooLarge"


class GitConflictError(GitError):
    """A human changed managed keys in the repository in a way that conflicts with the experiment."""

    reason = "GitConflict"

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


class GitPushRejected(GitError):
    """The push kept being rejected after the bounded number of fetch-and-reapply retries."""

    reason = "GitPushRejected"


class GitValuesError(GitError):
    """The values file is missing, unreadable, or the edit would break the chart's schema; nothing was pushed."""

    reason = "InvalidValues"

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ForgeError(GitError):
    """The forge's API (Gitea or GitHub) failed to open or report a pull request."""

    reason = "PullRequestFailed"
