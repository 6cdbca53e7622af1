"""Git delivery: the managed keys in a values file of the repository Argo CD syncs, errors translated once.

Push mode commits straight to the branch Argo CD syncs. PullRequest mode pushes a branch of its own (named
after the experiment, the change and the desired keys, so every pass finds the same one) and opens (or
reuses) the pull request; ``write`` then reports the branch and the pull request in its result, and ``read``
keeps showing the target branch, so the change counts as applied only once it is merged there. What that
means for the experiment's status is decided in :mod:`canopy_operator.core.plan`, from the traits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from canopy_operator.core.changes import CommitInfo, pull_request_text
from canopy_operator.core.values import GEN1, ManagedKeys, ValuesLayout
from canopy_operator.delivery.base import DeliveryError, DeliveryTraits, SourceState, WriteResult
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import GitError
from canopy_operator.gitops.forge import Forge, repo_ref
from canopy_operator.gitops.repo import GitTarget, GitWorkspace, Observation


class GitDeliveryError(DeliveryError):
    """A Git delivery failure; ``reason`` is the Git error's (GitAuthFailed, GitConflict, ...)."""

    def __init__(self, error: GitError) -> None:
        super().__init__(str(error))
        self.reason = error.reason
        self.error = error


@dataclass
class GitDelivery:
    """One experiment's Git delivery for one reconcile pass."""

    workspace: GitWorkspace
    target: GitTarget
    credentials: GitCredentials | None
    info: CommitInfo
    last_applied: ManagedKeys | str | None = None
    """What the operator last wrote (keys, or their ``managed_hash`` from status); None before the first write."""
    pr_branch: str | None = None
    """PullRequest mode with a fixed branch (see ``core.changes.branch_name``)."""
    pr_branch_for: Callable[[ManagedKeys], str] | None = None
    """PullRequest mode: the branch for the desired keys (used when ``pr_branch`` is None)."""
    pr_base: str | None = None
    """PullRequest mode: the branch the pull request targets; defaults to ``target.branch``."""
    forge: Forge | None = None
    """PullRequest mode: where to open the pull request; None leaves it to a human."""
    seen: Observation | None = None
    """The target branch as ``read`` last saw it."""
    layout: ValuesLayout = GEN1
    """Which keys of the values file are the managed ones (``core.values.layout_for`` of the backend generation)."""

    @property
    def traits(self) -> DeliveryTraits:
        return DeliveryTraits(reviewed=self.pull_request_mode, versioned=True, target=self.target.branch)

    @property
    def pull_request_mode(self) -> bool:
        return self.pr_branch is not None or self.pr_branch_for is not None

    def branch_for(self, desired: ManagedKeys) -> str | None:
        if self.pr_branch is not None:
            return self.pr_branch
        return self.pr_branch_for(desired) if self.pr_branch_for is not None else None

    async def read(self) -> SourceState:
        try:
            self.seen = await self.workspace.observe(self.target, self.credentials, layout=self.layout)
        except GitError as exc:
            raise GitDeliveryError(exc) from None
        return SourceState(keys=self.seen.keys, text=self.seen.text, version=self.seen.sha, argo_managed=False)

    async def rollout_pending(self) -> str | None:
        """Argo CD rolls the Deployment after a sync; the operator does not know its name in Git mode, so the
        backend's own report (flags and the A/B endpoint) is the proof of effect."""
        return None

    async def write(
        self, desired: ManagedKeys, *, ensure_rolled: bool = False, record: str | None = None
    ) -> WriteResult:
        """Commit (and push) ``desired``. ``ensure_rolled`` asks for nothing more here (Argo CD rolls the pod):
        the target branch already carries the keys, so it only reports the commit there. A commit carries no
        start record (``traits.carries_record`` is false: the pass writes its intent to status first)."""
        if record is not None:
            raise ValueError("Git delivery carries no start record")
        if ensure_rolled and self.seen is not None and self.seen.keys == desired:
            return WriteResult(changed=False, revision=self.seen.sha, rolled=False)
        branch = self.branch_for(desired)
        review_url: str | None = None
        try:
            if branch is not None:
                seen = self.seen or await self.workspace.observe(self.target, self.credentials, layout=self.layout)
                if seen.keys == desired:  # merged already: no branch, no pull request
                    return WriteResult(changed=False, revision=seen.sha, rolled=False)
            result = await self.workspace.deliver(
                self.target,
                self.credentials,
                desired,
                self.last_applied,
                self.info,
                push_branch=branch,
                layout=self.layout,
            )
            pushed = branch if branch is not None and result.branch == branch else None
            if pushed is not None and self.forge is not None:
                title, body = pull_request_text(self.info, self.target.values_file)
                base = self.pr_base or self.target.branch
                pull_request = await self.forge.ensure_pull_request(
                    repo_ref(self.target.repository), pushed, base, title, body
                )
                review_url = pull_request.url
        except GitError as exc:
            raise GitDeliveryError(exc) from None
        return WriteResult(
            changed=result.changed, revision=result.sha, rolled=False, review_branch=pushed, review_url=review_url
        )
