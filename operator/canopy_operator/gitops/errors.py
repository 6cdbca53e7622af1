"""Git delivery's domain errors and the redaction every message passes through before anyone sees it."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
MASK = "***"


class GitError(Exception):
    """Git delivery failed; the message is already redacted."""

    reason = "GitFailed"


class GitAuthError(GitError):
    """The repository or forge rejected the credentials (or none were given)."""

    reason = "GitAuthFailed"


class GitCredentialsError(GitError):
    """The credentials Secret named in the spec is missing or holds neither a password/token nor an SSH key."""

    reason = "GitCredentialsMissing"


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


class Redactor:
    """Strips URL userinfo and every secret value (raw, URL-encoded, and as a Basic-auth token) from text."""

    def __init__(self, secrets: Iterable[str | None] = (), username: str | None = None) -> None:
        values = {s for s in secrets if s}
        for secret in list(values):
            values.add(quote(secret, safe=""))
            if username:
                values.add(base64.b64encode(f"{username}:{secret}".encode()).decode())
        self._secrets = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        out = text
        for secret in self._secrets:
            out = out.replace(secret, MASK)
        return _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", out)


def redact(text: str, secrets: Iterable[str | None] = (), username: str | None = None) -> str:
    """``text`` without URL userinfo or any of ``secrets``."""
    return Redactor(secrets, username)(text)
