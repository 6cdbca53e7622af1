"""Git delivery behind the reconcile's ``Delivery`` protocol (``read``/``write``), errors translated once.

Push mode commits straight to the branch Argo CD syncs. PullRequest mode pushes a branch of its own (named
after the experiment, the change and the desired keys, so every pass finds the same one) and opens (or
reuses) the pull request; ``write`` then reports ``changed`` with the branch head as revision, and ``read``
keeps showing the target branch, so the change counts as applied only once it is merged there.

:meth:`GitDelivery.track` is Git's part of a reconcile pass after the delivery step: it records the pushed
branch and the pull request in ``status.delivery``, says whether the pass must wait for a merge (no
verification, no second write), and once the target branch carries the change makes ``status.delivery.revision``
the commit there (the one Argo CD deploys).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from canopy_operator.api.status import DeliveryStatus, PromptExperimentStatus
from canopy_operator.core.values import ManagedKeys, managed_hash
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import GitError
from canopy_operator.gitops.forge import Forge, PullRequest, repo_ref
from canopy_operator.gitops.repo import CommitInfo, GitTarget, GitWorkspace, Observation, pull_request_text
from canopy_operator.k8s.configmap_delivery import DeliveryError, SourceState, WriteResult

EventSink = Callable[[str, str], None]


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
    """PullRequest mode with a fixed branch (see ``repo.branch_name``)."""
    pr_branch_for: Callable[[ManagedKeys], str] | None = None
    """PullRequest mode: the branch for the desired keys (used when ``pr_branch`` is None)."""
    pr_base: str | None = None
    """PullRequest mode: the branch the pull request targets; defaults to ``target.branch``."""
    forge: Forge | None = None
    """PullRequest mode: where to open the pull request; None leaves it to a human."""
    pull_request: PullRequest | None = None
    """Set by ``write`` in PullRequest mode."""
    pushed_branch: str | None = None
    """Set by ``write`` in PullRequest mode: the branch that carries the change."""
    seen: Observation | None = None
    """The target branch as ``read`` last saw it."""

    @property
    def pull_request_mode(self) -> bool:
        return self.pr_branch is not None or self.pr_branch_for is not None

    def branch_for(self, desired: ManagedKeys) -> str | None:
        if self.pr_branch is not None:
            return self.pr_branch
        return self.pr_branch_for(desired) if self.pr_branch_for is not None else None

    async def read(self) -> SourceState:
        try:
            self.seen = await self.workspace.observe(self.target, self.credentials)
        except GitError as exc:
            raise GitDeliveryError(exc) from None
        return SourceState(keys=self.seen.keys, text=self.seen.text, version=self.seen.sha, argo_managed=False)

    async def rollout_pending(self) -> str | None:
        """Argo CD rolls the Deployment after a sync; the operator does not know its name in Git mode, so the
        backend's own report (flags and the A/B endpoint) is the proof of effect."""
        return None

    async def write(self, desired: ManagedKeys, *, ensure_rolled: bool = False) -> WriteResult:
        """Commit (and push) ``desired``. ``ensure_rolled`` asks for nothing more here (Argo CD rolls the pod):
        the target branch already carries the keys, so it only reports the commit there."""
        if ensure_rolled and self.seen is not None and self.seen.keys == desired:
            return WriteResult(changed=False, revision=self.seen.sha, rolled=False)
        branch = self.branch_for(desired)
        try:
            if branch is not None:
                seen = self.seen or await self.workspace.observe(self.target, self.credentials)
                if seen.keys == desired:  # merged already: no branch, no pull request
                    return WriteResult(changed=False, revision=seen.sha, rolled=False)
            result = await self.workspace.deliver(
                self.target, self.credentials, desired, self.last_applied, self.info, push_branch=branch
            )
            if branch is not None and result.branch == branch:
                self.pushed_branch = branch
                if self.forge is not None:
                    title, body = pull_request_text(self.info, self.target)
                    base = self.pr_base or self.target.branch
                    self.pull_request = await self.forge.ensure_pull_request(
                        repo_ref(self.target.repository), branch, base, title, body
                    )
        except GitError as exc:
            raise GitDeliveryError(exc) from None
        return WriteResult(changed=result.changed, revision=result.sha, rolled=False)

    def awaiting_merge(self, delivery: DeliveryStatus, desired: ManagedKeys) -> bool:
        """PullRequest mode: this change was pushed for review and the target branch does not carry it yet."""
        return (
            self.pull_request_mode
            and delivery.branch is not None
            and delivery.applied_hash == managed_hash(desired)
            and delivery.verified_at is None
            and (self.seen is None or self.seen.keys != desired)
        )

    def track(
        self,
        st: PromptExperimentStatus,
        source: SourceState,
        desired: ManagedKeys,
        now: datetime,
        event: EventSink,
    ) -> tuple[PromptExperimentStatus, bool]:
        """Git's part of ``status.delivery`` after the delivery step, and whether to wait for a merge."""
        d = st.delivery
        update: dict[str, object] = {}
        if not self.pull_request_mode:
            update |= {"branch": None, "pull_request_url": None}
        elif self.pushed_branch is not None:
            url = self.pull_request.url if self.pull_request is not None else None
            if self.pushed_branch != d.branch or url != d.pull_request_url:
                where = url or f"branch {self.pushed_branch} (no forge configured: open the pull request by hand)"
                event("PullRequestOpened", f"{self.info.change}: review and merge {where}")
            update |= {"branch": self.pushed_branch, "pull_request_url": url}
        if source.keys == desired and d.verified_at is None and source.version and d.revision != source.version:
            # The target branch carries the change: that commit is what Argo CD deploys.
            update["revision"] = source.version
            if self.pull_request_mode:
                update["applied_at"] = now  # a merge counts from the moment it is seen
                event("PullRequestMerged", f"{self.info.change}: merged into {self.target.branch} ({source.version})")
        st = st.model_copy(update={"delivery": d.model_copy(update=update)})
        return st, self.awaiting_merge(st.delivery, desired)
