"""Git delivery: edit the managed keys of the values file in the repository Argo CD syncs, commit, push.

One clone per namespace, repository, branch and values file is cached (``gitops.disk``); before every edit it
is fetched and reset to the remote head, so the edit always applies to what is there now. A rejected push
(someone pushed first) is answered by fetching again and re-applying the edit on the new head, a bounded number of
times; nothing is ever force-pushed and nobody else's commit is rewritten. An edit that is already in place
commits nothing and returns the current head.

Bounds (security-model rules 2 and 3): the repository must be an ``https``/``http``/``ssh`` URL (``file://`` only
with the operator's flag, and never into its own cache); clones are shallow (depth 1), partial (no file
contents but the values file's: ``--filter=blob:none`` and a sparse checkout of that one path) and single-branch;
git is stopped when a clone grows past ``max_clone_bytes``, a values file over ``max_values_bytes`` is not read,
and a values file that is (or lies under) a symbolic link is refused. The whole cache is kept under
``cache_budget_bytes`` by removing the least recently used clones.

PullRequest mode pushes to a branch of its own (built on that branch if it exists, else on the target branch)
and leaves opening the pull request to ``forge.py``; a human reviews the diff there, so no conflict check is
made. The change counts as applied only once the target branch itself carries the desired values
(``observe``). When the target branch already carries them and no branch of ours exists, nothing is pushed
and the result names the target branch.

The workspace serves every experiment of the process, so which keys of a values file are the managed ones is
told per call (``layout``: ``core.values.layout_for`` of the experiment's backend generation; Generation 1 unless
told).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from canopy_operator.core.changes import CommitInfo, commit_message
from canopy_operator.core.redact import Redactor
from canopy_operator.core.values import (
    GEN1,
    ManagedKeys,
    ReadValues,
    ValuesConflict,
    ValuesEditError,
    ValuesLayout,
    check_conflict,
    edit_values,
    read_managed,
)
from canopy_operator.gitops import disk
from canopy_operator.gitops.credentials import GitCredentials, git_environment
from canopy_operator.gitops.errors import (
    GitAuthError,
    GitConflictError,
    GitError,
    GitPushRejected,
    GitRepositoryTooLarge,
    GitValuesError,
    brief,
)
from canopy_operator.gitops.gitcmd import PushRejected, SizeGuard, run_git
from canopy_operator.gitops.policy import (
    REPOSITORY_FIELD,
    VALUES_FIELD,
    GitPolicy,
    check_repository,
    sparse_pattern,
    values_path_in_repo,
)
from canopy_operator.yamlsplice.bounded import LIMITS, Limits

MAX_CLONE_BYTES = 64 * 1024 * 1024
MAX_VALUES_BYTES = 1024 * 1024
CACHE_BUDGET_BYTES = 512 * 1024 * 1024
_REGULAR = ("100644", "100755")
_SYMLINK = "120000"


@dataclass(frozen=True)
class GitTarget:
    """Where the values live (spec.delivery.git), and whose they are."""

    repository: str
    branch: str = "main"
    values_file: str = "chart/values-test.yaml"
    namespace: str = ""
    """The experiment's namespace: its clones live apart from every other namespace's."""


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
        read: ReadValues = read_managed,
        policy: GitPolicy | None = None,
        max_clone_bytes: int = MAX_CLONE_BYTES,
        max_values_bytes: int = MAX_VALUES_BYTES,
        cache_budget_bytes: int = CACHE_BUDGET_BYTES,
    ) -> None:
        self.cache_dir = cache_dir
        self.max_push_attempts = max_push_attempts
        self.timeout = timeout
        self.clock = clock
        self.read_keys = read
        self.policy = policy or GitPolicy()
        self.max_clone_bytes = max_clone_bytes
        self.max_values_bytes = max_values_bytes
        self.cache_budget_bytes = cache_budget_bytes
        self._locks: dict[Path, asyncio.Lock] = {}
        self._sizes: dict[Path, int] = {}
        self._used: dict[Path, int] = {}
        self._uses = itertools.count(1)

    @property
    def clones_dir(self) -> Path:
        """``<cache>/namespaces``: one directory per namespace below it, one clone per target in that."""
        return self.cache_dir / "namespaces"

    def clone_dir(self, target: GitTarget) -> Path:
        key = f"{target.repository}\0{target.branch}\0{target.values_file}"
        return self.clones_dir / target.namespace / hashlib.sha256(key.encode()).hexdigest()[:20]

    def check_target(self, target: GitTarget) -> None:
        """Refuse a repository the operator does not clone (``gitops.policy``), naming the field."""
        check_repository(target.repository, target.namespace, self.policy, self.cache_dir)

    async def observe(
        self, target: GitTarget, credentials: GitCredentials | None, *, layout: ValuesLayout = GEN1
    ) -> Observation:
        """The managed keys (of ``layout``) on ``target.branch`` right now (fetches first)."""
        session = _Session(self, target, credentials)
        async with session.locked():
            with git_environment(credentials, allow_file=self.policy.allow_file_repositories) as env:
                session.env = env
                await session.sync(target.branch)
                text = session.read_values()
                try:
                    keys = await _off_loop(
                        target.values_file, "reading the values", lambda _: self.read_keys(text, layout=layout)
                    )
                except (ValuesEditError, RecursionError) as exc:
                    raise GitValuesError(session.redact(f"{target.values_file}: {_short(exc)}")) from None
                return Observation(keys, text, await session.head())

    async def applied(
        self,
        target: GitTarget,
        credentials: GitCredentials | None,
        desired: ManagedKeys,
        *,
        layout: ValuesLayout = GEN1,
    ) -> str | None:
        """The head SHA of ``target.branch`` when it carries ``desired`` (a PR counts only once merged)."""
        seen = await self.observe(target, credentials, layout=layout)
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
        layout: ValuesLayout = GEN1,
    ) -> GitResult:
        """Make the values file carry ``desired`` on ``target.branch`` (or on ``push_branch``, PR mode)."""
        session = _Session(self, target, credentials, layout)
        async with session.locked():
            with git_environment(credentials, allow_file=self.policy.allow_file_repositories) as env:
                session.env = env
                return await session.deliver(desired, last_applied, info, push_branch)

    # -- the cache ----------------------------------------------------------------------------------------
    def lock_for(self, path: Path) -> asyncio.Lock:
        return self._locks.setdefault(path, asyncio.Lock())

    def used(self, path: Path, size: int) -> None:
        """Record a use of the clone at ``path`` and its size now."""
        self._used[path] = next(self._uses)
        self._sizes[path] = size
        disk.touch(path)

    async def evict(self) -> list[Path]:
        """Remove least recently used clones not in use until the cache fits its budget; the removed ones."""
        entries: list[disk.CacheEntry] = []
        for path in await asyncio.to_thread(disk.clones, self.clones_dir):
            size = self._sizes.get(path)
            if size is None:
                size = await asyncio.to_thread(disk.tree_size, path, self.max_clone_bytes)
                self._sizes[path] = size
            busy = self._locks.get(path)
            entries.append(
                disk.CacheEntry(
                    path, size, (self._used.get(path, 0), disk.last_used(path)), busy is not None and busy.locked()
                )
            )
        removed = []
        for path in disk.eviction_order(entries, self.cache_budget_bytes):
            lock = self.lock_for(path)
            if lock.locked():
                continue
            async with lock:
                await asyncio.to_thread(disk.remove, path)
            self._sizes.pop(path, None)
            self._used.pop(path, None)
            removed.append(path)
        return removed


class _Session:
    """One delivery against one cached clone (holds the environment and the redactor)."""

    def __init__(
        self, ws: GitWorkspace, target: GitTarget, credentials: GitCredentials | None, layout: ValuesLayout = GEN1
    ) -> None:
        ws.check_target(target)
        self.ws = ws
        self.target = target
        self.layout = layout
        self.dir = ws.clone_dir(target)
        self.redact: Redactor = (credentials or GitCredentials()).redactor()
        self.env: dict[str, str] = {}
        self.cloned_now = False
        """This session made the clone (and has not yet synced it successfully)."""

    def locked(self) -> asyncio.Lock:
        return self.ws.lock_for(self.dir)

    def guard(self) -> SizeGuard:
        limit = self.ws.max_clone_bytes
        message = (
            f"the clone of {brief(self.redact(self.target.repository), 120)} ({REPOSITORY_FIELD}) grew past "
            f"{disk.human(limit)}, the operator's bound for one repository; nothing was read"
        )
        return SizeGuard(self.dir, limit, message)

    async def git(self, *args: str, cwd: bool = True, guarded: bool = False) -> str:
        return await run_git(
            list(args),
            env=self.env,
            redactor=self.redact,
            cwd=self.dir if cwd else None,
            time_limit=self.ws.timeout,
            guard=self.guard() if guarded else None,
        )

    async def head(self) -> str:
        return (await self.git("rev-parse", "HEAD")).strip()

    async def sync(self, branch: str) -> None:
        """Fetch ``branch`` and check out its remote head (detached, clean) within the bounds; a broken or
        overgrown cached clone is cloned afresh once; a fresh clone that fails is removed."""
        fresh = await self.ensure_clone() or self.cloned_now
        try:
            await self._checkout(branch)
            size = await self._measure()
        except (GitAuthError, GitValuesError):
            raise
        except GitError:
            await asyncio.to_thread(disk.remove, self.dir)
            if fresh:
                raise
            await self.ensure_clone()
            try:
                await self._checkout(branch)
                size = await self._measure()
            except GitRepositoryTooLarge:
                await asyncio.to_thread(disk.remove, self.dir)
                raise
        self.cloned_now = False
        self.ws.used(self.dir, size)
        await self.ws.evict()

    async def _measure(self) -> int:
        size = await asyncio.to_thread(disk.tree_size, self.dir, self.ws.max_clone_bytes)
        if size > self.ws.max_clone_bytes:
            raise GitRepositoryTooLarge(self.guard().message)
        return size

    async def _checkout(self, branch: str) -> None:
        await self.fetch(branch)
        await self._check_tree(f"refs/remotes/origin/{branch}")
        await self.git("checkout", "--quiet", "--force", "--detach", f"refs/remotes/origin/{branch}", guarded=True)
        await self.git("clean", "-fdxq")

    async def ensure_clone(self) -> bool:
        """Clone unless a clone is there; whether it cloned now."""
        if (self.dir / ".git").is_dir():
            return False
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(disk.remove, self.dir)
        try:
            await self.git(
                "clone",
                "--quiet",
                "--template=",
                "--depth=1",
                "--filter=blob:none",
                "--no-checkout",
                "--single-branch",
                f"--branch={self.target.branch}",
                "--",
                self.target.repository,
                str(self.dir),
                cwd=False,
                guarded=True,
            )
            await self.git("sparse-checkout", "set", "--no-cone", sparse_pattern(self.target.values_file))
        except GitError:
            await asyncio.to_thread(disk.remove, self.dir)
            raise
        self.cloned_now = True
        return True

    async def fetch(self, branch: str) -> None:
        refspec = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
        await self.git("fetch", "--quiet", "--depth=1", "origin", refspec, guarded=True)

    async def remote_has(self, branch: str) -> bool:
        out = await self.git("ls-remote", "--heads", "origin", f"refs/heads/{branch}")
        return bool(out.strip())

    async def _check_tree(self, ref: str) -> None:
        """The values file is a regular file in ``ref``'s tree, not a symbolic link nor under one (read from the
        tree objects, before anything is checked out)."""
        name = values_path_in_repo(self.target.values_file)
        parts = name.split("/")
        paths = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        out = await self.git("ls-tree", "-z", ref, "--", *paths)
        modes = {}
        for record in out.split("\0"):
            meta, _, path = record.partition("\t")
            if path:
                modes[path] = meta.split(" ", 1)[0]
        mode = modes.get(name)
        if mode == _SYMLINK or any(modes.get(p) == _SYMLINK for p in paths[:-1]):
            raise GitValuesError(
                f"{name} ({VALUES_FIELD}) is a symbolic link or lies under one; the operator reads only a regular "
                "file of the repository"
            )
        if mode is not None and mode not in _REGULAR:
            raise GitValuesError(f"{name} ({VALUES_FIELD}) is not a regular file")

    def values_path(self) -> Path:
        """The values file in the clone; refuses a path that leaves the repository or passes a symbolic link."""
        name = values_path_in_repo(self.target.values_file)
        path = self.dir
        for part in name.split("/"):
            path = path / part
            if path.is_symlink():
                raise GitValuesError(
                    f"{name} ({VALUES_FIELD}) is a symbolic link or lies under one; the operator reads only a "
                    "regular file of the repository"
                )
        return path

    def read_values(self) -> str:
        path = self.values_path()
        limit = self.ws.max_values_bytes
        try:
            info = path.lstat()
        except FileNotFoundError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise GitValuesError(f"{self.target.values_file} not found in {self.redact(self.target.repository)}")
        if info.st_size > limit:
            raise GitRepositoryTooLarge(
                f"{self.target.values_file} ({VALUES_FIELD}) is {disk.human(info.st_size)}, over the "
                f"{disk.human(limit)} the operator reads"
            )
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(limit + 1)
        if len(raw) > limit:
            raise GitRepositoryTooLarge(f"{self.target.values_file} ({VALUES_FIELD}) is over {disk.human(limit)}")
        try:
            return raw.decode("utf-8")
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
            edit = await _off_loop(
                self.target.values_file,
                "editing the values",
                partial(self._edit, text, desired, last_applied if push_branch is None else None),
            )
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
        self, text: str, desired: ManagedKeys, last_applied: ManagedKeys | str | None, limits: Limits
    ) -> tuple[ManagedKeys, str] | None:
        """The current keys and the edited text; None when already desired. Raises on conflicts/invalid.

        Runs in a worker thread (``_off_loop``), bounded by ``limits`` and their deadline."""
        name = self.target.values_file
        try:
            current = self.ws.read_keys(text, layout=self.layout)
            if current == desired:
                return None
            check_conflict(current, last_applied, desired, layout=self.layout)
            edited = edit_values(text, desired, layout=self.layout, limits=limits)
        except ValuesConflict as exc:
            raise GitConflictError(f"{name}: {exc}", exc.paths) from None
        except ValuesEditError as exc:
            raise GitValuesError(f"{name}: {_short(exc)}", exc.problems) from None
        except (ValueError, RecursionError) as exc:
            raise GitValuesError(f"{name}: {_short(exc)}") from None
        return current, edited

    async def _commit(self, text: str, before: ManagedKeys, after: ManagedKeys, info: CommitInfo) -> None:
        fd = os.open(self.values_path(), os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
        for role in ("AUTHOR", "COMMITTER"):
            self.env[f"GIT_{role}_NAME"] = info.author_name
            self.env[f"GIT_{role}_EMAIL"] = info.author_email
        await self.git("add", "--", self.target.values_file)
        message = Path(self.env["HOME"]) / "commit-message"
        message.write_text(commit_message(info, before, after, layout=self.layout), encoding="utf-8")
        await self.git("commit", "--quiet", "--no-verify", f"--file={message}")


PARSE_TIMEOUT = 5.0
"""Seconds one read or edit of a values file may take (it runs in a worker thread)."""
MAX_MESSAGE = 400

T = TypeVar("T")


async def _off_loop(name: str, what: str, work: Callable[[Limits], T]) -> T:
    """``work(limits)`` in a worker thread within :data:`PARSE_TIMEOUT`: one tenant's values file must not
    stall the operator's event loop for the others (the parse itself is bounded, and stops at the deadline)."""
    deadline = time.monotonic() + PARSE_TIMEOUT
    limits = replace(LIMITS, stop=lambda: time.monotonic() > deadline)
    try:
        async with asyncio.timeout(PARSE_TIMEOUT):
            return await asyncio.to_thread(work, limits)
    except TimeoutError:
        raise GitValuesError(f"{name}: {what} took longer than {PARSE_TIMEOUT:g}s (time bound); refused") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
