"""Git delivery behind the reconcile's ``Delivery`` protocol (``read``/``write``), errors translated once.

Push mode commits straight to the branch Argo CD syncs. PullRequest mode pushes ``branch`` and opens (or
reuses) the pull request; ``write`` then reports ``changed`` with the branch head as revision, and
``read`` keeps showing the target branch, so the change counts as applied only once it is merged there.
"""

from __future__ import annotations

from dataclasses import dataclass

from canopy_operator.core.values import ManagedKeys
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import GitError
from canopy_operator.gitops.forge import Forge, PullRequest, repo_ref
from canopy_operator.gitops.repo import CommitInfo, GitTarget, GitWorkspace, pull_request_text
from canopy_operator.k8s.configmap_delivery import DeliveryError, SourceState, WriteResult


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
    """PullRequest mode: the branch to push (see ``repo.branch_name``)."""
    forge: Forge | None = None
    """PullRequest mode: where to open the pull request; None leaves it to a human."""
    pull_request: PullRequest | None = None
    """Set by ``write`` in PullRequest mode."""

    async def read(self) -> SourceState:
        try:
            seen = await self.workspace.observe(self.target, self.credentials)
        except GitError as exc:
            raise GitDeliveryError(exc) from None
        return SourceState(keys=seen.keys, text=seen.text, version=seen.sha, argo_managed=False)

    async def write(self, desired: ManagedKeys, *, ensure_rolled: bool = False) -> WriteResult:
        """Commit (and push) ``desired``; ``ensure_rolled`` has no meaning here: Argo CD rolls the pod."""
        try:
            result = await self.workspace.deliver(
                self.target, self.credentials, desired, self.last_applied, self.info, push_branch=self.pr_branch
            )
            if self.pr_branch is not None and result.branch == self.pr_branch and self.forge is not None:
                title, body = pull_request_text(self.info, self.target)
                self.pull_request = await self.forge.ensure_pull_request(
                    repo_ref(self.target.repository), result.branch, self.target.branch, title, body
                )
        except GitError as exc:
            raise GitDeliveryError(exc) from None
        return WriteResult(changed=result.changed, revision=result.sha, rolled=False)
