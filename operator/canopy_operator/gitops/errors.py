"""Git delivery's domain errors; every message passes through :mod:`canopy_operator.core.redact` first."""

from __future__ import annotations


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
