"""Git delivery: edit the managed keys of the values file in the repository Argo CD syncs, commit, push.

One shallow clone per repository and branch is cached under a directory; before every edit it is fetched
and reset to the remote head, so the edit always applies to what is there now. A rejected push (someone
pushed first) is answered by fetching again and re-applying the edit on the new head, a bounded number of
times; nothing is ever force-pushed and nobody else's commit is rewritten. An edit that is already in place
commits nothing and returns the current head.

PullRequest mode pushes to a branch of its own (built on that branch if it exists, else on the target branch)
and leaves opening the pull request to ``forge.py``; a human reviews the diff there, so no conflict check is
made. The change counts as applied only once the target branch itself carries the desired values
(``observe``). When the target branch already carries them and no branch of ours exists, nothing is pushed
and the result names the target branch.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from canopy_operator.core.changes import CommitInfo, commit_message
from canopy_operator.core.redact import Redactor
from canopy_operator.core.values import (
    ManagedKeys,
    ValuesConflict,
    ValuesEditError,
    apply_managed,
    check_conflict,
    read_managed,
    validate_values,
)
from canopy_operator.gitops.credentials import GitCredentials, git_environment
from canopy_operator.gitops.errors import (
    GitAuthError,
    GitConflictError,
    GitError,
    GitPushRejected,
    GitValuesError,
)
from canopy_operator.gitops.gitcmd import PushRejected, run_git


@dataclass(frozen=True)
class GitTarget:
    """Where the values live (spec.delivery.git)."""

    repository: str
    branch: str = "main"
    values_file: str = "chart/values-test.yaml"


@dataclass(frozen=True)
class GitResult:
    """What a delivery did."""

    sha: str
    """Head of ``branch`` after the delivery (the new commit, or the unchanged head)."""
    changed: bool
    branch: str
    pushed_at: datetime | None


@dataclass(frozen=True)
class Observation:
    """The values file as it is on a branch now."""

    keys: ManagedKeys
    text: str
    sha: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


class GitWorkspace:
    """Cached clones plus the edit-commit-push loop. One lock per cached clone serialises its users."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        max_push_attempts: int = 4,
        timeout: float = 120.0,
        clock: Callable[[], datetime] = _utcnow,
        read: Callable[[str], ManagedKeys] = read_managed,
    ) -> None:
        self.cache_dir = cache_dir
        self.max_push_attempts = max_push_attempts
        self.timeout = timeout
        self.clock = clock
        self.read_keys = read
        self._locks: dict[Path, asyncio.Lock] = {}

    def clone_dir(self, repository: str, branch: str) -> Path:
        digest = hashlib.sha256(f"{repository}\0{branch}".encode()).hexdigest()[:20]
        return self.cache_dir / digest

    async def observe(self, target: GitTarget, credentials: GitCredentials | None) -> Observation:
        """The managed keys on ``target.branch`` right now (fetches first)."""
        session = _Session(self, target, credentials)
        async with session.locked():
            with git_environment(credentials) as env:
                session.env = env
                await session.sync(target.branch)
                text = session.read_values()
                try:
                    keys = self.read_keys(text)
                except ValuesEditError as exc:
                    raise GitValuesError(session.redact(f"{target.values_file}: {exc}")) from None
                return Observation(keys, text, await session.head())

    async def applied(self, target: GitTarget, credentials: GitCredentials | None, desired: ManagedKeys) -> str | None:
        """The head SHA of ``target.branch`` when it carries ``desired`` (a PR counts only once merged)."""
        seen = await self.observe(target, credentials)
        return seen.sha if seen.keys == desired else None

    async def deliver(
        self,
        target: GitTarget,
        credentials: GitCredentials | None,
        desired: ManagedKeys,
        last_applied: ManagedKeys | str | None,
        info: CommitInfo,
        *,
        push_branch: str | None = None,
    ) -> GitResult:
        """Make the values file carry ``desired`` on ``target.branch`` (or on ``push_branch``, PR mode)."""
        session = _Session(self, target, credentials)
        async with session.locked():
            with git_environment(credentials) as env:
                session.env = env
                return await session.deliver(desired, last_applied, info, push_branch)


class _Session:
    """One delivery against one cached clone (holds the environment and the redactor)."""

    def __init__(self, ws: GitWorkspace, target: GitTarget, credentials: GitCredentials | None) -> None:
        self.ws = ws
        self.target = target
        self.dir = ws.clone_dir(target.repository, target.branch)
        self.redact: Redactor = (credentials or GitCredentials()).redactor()
        self.env: dict[str, str] = {}

    def locked(self) -> asyncio.Lock:
        return self.ws._locks.setdefault(self.dir, asyncio.Lock())

    async def git(self, *args: str, cwd: bool = True) -> str:
        return await run_git(
            list(args),
            env=self.env,
            redactor=self.redact,
            cwd=self.dir if cwd else None,
            time_limit=self.ws.timeout,
        )

    async def head(self) -> str:
        return (await self.git("rev-parse", "HEAD")).strip()

    async def sync(self, branch: str) -> None:
        """Fetch ``branch`` and check out its remote head (detached, clean); a broken cache is re-cloned once."""
        await self.ensure_clone()
        try:
            await self._checkout(branch)
        except GitAuthError:
            raise
        except GitError:
            shutil.rmtree(self.dir, ignore_errors=True)
            await self.ensure_clone()
            await self._checkout(branch)

    async def _checkout(self, branch: str) -> None:
        await self.fetch(branch)
        await self.git("checkout", "--quiet", "--force", "--detach", f"refs/remotes/origin/{branch}")
        await self.git("clean", "-fdxq")

    async def ensure_clone(self) -> None:
        if (self.dir / ".git").is_dir():
            return
        self.ws.cache_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        await self.git(
            "clone",
            "--quiet",
            "--depth=1",
            "--single-branch",
            f"--branch={self.target.branch}",
            "--",
            self.target.repository,
            str(self.dir),
            cwd=False,
        )

    async def fetch(self, branch: str) -> None:
        await self.git("fetch", "--quiet", "--depth=1", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}")

    async def remote_has(self, branch: str) -> bool:
        out = await self.git("ls-remote", "--heads", "origin", f"refs/heads/{branch}")
        return bool(out.strip())

    def values_path(self) -> Path:
        path = (self.dir / self.target.values_file).resolve()
        if not path.is_relative_to(self.dir.resolve()):
            raise GitValuesError(f"{self.target.values_file} points outside the repository")
        return path

    def read_values(self) -> str:
        path = self.values_path()
        if not path.is_file():
            raise GitValuesError(f"{self.target.values_file} not found in {self.redact(self.target.repository)}")
        try:
            return path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise GitValuesError(f"{self.target.values_file} is not UTF-8 text") from None

    async def deliver(
        self, desired: ManagedKeys, last_applied: ManagedKeys | str | None, info: CommitInfo, push_branch: str | None
    ) -> GitResult:
        dest = push_branch or self.target.branch
        await self.ensure_clone()
        for _ in range(self.ws.max_push_attempts):
            base = dest if dest == self.target.branch or await self.remote_has(dest) else self.target.branch
            await self.sync(base)
            head = await self.head()
            text = self.read_values()
            edit = self._edit(text, desired, last_applied if push_branch is None else None)
            if edit is None:
                return GitResult(sha=head, changed=False, branch=base, pushed_at=None)
            await self._commit(edit[1], edit[0], desired, info)
            try:
                await self.git("push", "origin", f"HEAD:refs/heads/{dest}")
            except PushRejected:
                continue
            return GitResult(sha=await self.head(), changed=True, branch=dest, pushed_at=self.ws.clock())
        raise GitPushRejected(
            f"push to {dest} was rejected {self.ws.max_push_attempts} times (others keep pushing); will retry later"
        )

    def _edit(
        self, text: str, desired: ManagedKeys, last_applied: ManagedKeys | str | None
    ) -> tuple[ManagedKeys, str] | None:
        """The current keys and the edited text; None when already desired. Raises on conflicts/invalid."""
        name = self.target.values_file
        try:
            current = read_managed(text)
            if current == desired:
                return None
            check_conflict(current, last_applied, desired)
            edited = apply_managed(text, desired)
            problems = validate_values(edited)
        except ValuesConflict as exc:
            raise GitConflictError(f"{name}: {exc}", exc.paths) from None
        except ValuesEditError as exc:
            raise GitValuesError(f"{name}: {exc}") from None
        if problems:
            raise GitValuesError(f"{name}: the edited file would break the chart: {'; '.join(problems)}", problems)
        return current, edited

    async def _commit(self, text: str, before: ManagedKeys, after: ManagedKeys, info: CommitInfo) -> None:
        self.values_path().write_bytes(text.encode("utf-8"))
        for role in ("AUTHOR", "COMMITTER"):
            self.env[f"GIT_{role}_NAME"] = info.author_name
            self.env[f"GIT_{role}_EMAIL"] = info.author_email
        await self.git("add", "--", self.target.values_file)
        message = Path(self.env["HOME"]) / "commit-message"
        message.write_text(commit_message(info, before, after), encoding="utf-8")
        await self.git("commit", "--quiet", "--no-verify", f"--file={message}")
