"""Git mode wiring: credentials from the Secret, commit texts from status, PR branches, and Git's status step."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import (
    ConfidenceSequence,
    DeliveryStatus,
    Evidence,
    PendingPromotion,
    PromptExperimentStatus,
    VoteCounts,
)
from canopy_operator.core.changes import CommitInfo
from canopy_operator.core.plan import Tracking, track_delivery
from canopy_operator.core.redact import Redactor
from canopy_operator.core.values import ManagedKeys, managed_hash
from canopy_operator.delivery.configmap import ConfigMapDelivery
from canopy_operator.delivery.git import GitDelivery, GitDeliveryError
from canopy_operator.gitops.policy import GitPolicy
from canopy_operator.gitops.repo import GitTarget, GitWorkspace, Observation
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.settings import Settings
from canopy_operator.service.wiring import delivery_for, open_git_workspace
from tests.support.credentials import FakeSecrets, opted_in

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
AB = ManagedKeys("Champion.\n", "Challenger.\n", True, True)
BEFORE = ManagedKeys("Champion.\n", None, False, False)


REPOSITORY = "https://gitea.example.com/user1/backend.git"


def secrets_of(secrets: dict[str, dict[str, str]]) -> FakeSecrets:
    """The namespace's Secrets, each opted in for the experiment's repository."""
    allowed = "https://gitea.example.com/user1\nssh://gitea.example.com/user1"
    return FakeSecrets(*(opted_in(allowed, name, **data) for name, data in secrets.items()))


def spec(method: str = "Push", **git: Any) -> PromptExperimentSpec:
    return PromptExperimentSpec.model_validate(
        {
            "challenger": {"prompt": "Challenger.\n"},
            "delivery": {
                "mode": "Git",
                "git": {"repository": REPOSITORY, "method": method, **git},
            },
        }
    )


async def git_delivery(
    tmp_path: Path,
    spec_: PromptExperimentSpec,
    status: PromptExperimentStatus | None = None,
    secrets: dict[str, dict[str, str]] | None = None,
    restoring: bool = False,
    redactor: Redactor | None = None,
) -> GitDelivery:
    gateway = cast(Gateway, secrets_of(secrets or {}))
    made = await delivery_for(
        gateway,
        GitWorkspace(tmp_path),
        "user1-test",
        "exp",
        spec_,
        status or PromptExperimentStatus(),
        restoring=restoring,
        redactor=redactor,
    )
    assert isinstance(made, GitDelivery)
    return made


async def test_credentials_come_from_the_secret_and_are_redacted_from_logs(tmp_path: Path) -> None:
    secrets = {"repo": {"username": "user1", "password": "tok-9f8e7d6c5b4a\n"}}
    redactor = Redactor()
    made = await git_delivery(tmp_path, spec(credentialsSecret="repo"), secrets=secrets, redactor=redactor)
    assert made.credentials is not None
    assert (made.credentials.username, made.credentials.password) == ("user1", "tok-9f8e7d6c5b4a")
    assert redactor("push with tok-9f8e7d6c5b4a failed") == "push with *** failed"


async def test_ssh_key_secret_gives_ssh_credentials(tmp_path: Path) -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    secrets = {"repo": {"ssh-privatekey": key, "known_hosts": "gitea ssh-ed25519 AAAA\n"}}
    ssh = spec(credentialsSecret="repo", repository="git@gitea.example.com:user1/backend.git")
    made = await git_delivery(tmp_path, ssh, secrets=secrets)
    assert made.credentials is not None
    assert (made.credentials.ssh_private_key, made.credentials.password) == (key, None)
    assert made.credentials.known_hosts == "gitea ssh-ed25519 AAAA\n"


async def test_missing_credentials_secret_is_a_named_delivery_error(tmp_path: Path) -> None:
    with pytest.raises(GitDeliveryError) as info:
        await git_delivery(tmp_path, spec(credentialsSecret="nope"))
    assert info.value.reason == "GitCredentialsMissing"
    assert "user1-test/nope" in str(info.value)
    assert "spec.delivery.git.credentialsSecret" in str(info.value)


async def test_secret_without_password_or_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(GitDeliveryError) as info:
        await git_delivery(tmp_path, spec(credentialsSecret="repo"), secrets={"repo": {"username": "user1"}})
    assert info.value.reason == "GitCredentialsMissing"


async def test_configmap_mode_still_gets_the_configmap_delivery(tmp_path: Path) -> None:
    plain = PromptExperimentSpec.model_validate({"challenger": {"prompt": "Challenger.\n"}})
    made = await delivery_for(
        cast(Gateway, secrets_of({})), GitWorkspace(tmp_path), "ns", "exp", plain, PromptExperimentStatus()
    )
    assert isinstance(made, ConfigMapDelivery)


async def test_commit_names_the_experiment_author_and_last_applied_hash(tmp_path: Path) -> None:
    status = PromptExperimentStatus(delivery=DeliveryStatus(applied_hash=managed_hash(AB)))
    made = await git_delivery(tmp_path, spec(author={"name": "Bot", "email": "bot@example.com"}), status)
    assert (made.info.experiment, made.info.change) == ("user1-test/exp", "start the A/B test")
    assert (made.info.author_name, made.info.author_email) == ("Bot", "bot@example.com")
    assert made.last_applied == managed_hash(AB)
    assert not made.pull_request_mode


async def test_promotion_commit_carries_the_evidence(tmp_path: Path) -> None:
    status = PromptExperimentStatus(
        votes=VoteCounts(challenger_wins=25, champion_wins=5, ties=2),
        evidence=Evidence(p_value=0.039, confidence_sequence=ConfidenceSequence(lower=0.5115, upper=1.0)),
        pending_promotion=PendingPromotion(
            test_id="t-1", outcome="challenger", prompt_hash="h", decided_at=NOW, summary="challenger preferred 25-5"
        ),
    )
    made = await git_delivery(tmp_path, spec(), status)
    assert made.info.change == "promote the challenger"
    assert "Votes: challenger 25, champion 5, ties 2" in made.info.evidence
    assert "[0.5115, 1.0000]" in made.info.evidence
    assert "challenger preferred 25-5" in made.info.evidence


async def test_restore_commit_says_so(tmp_path: Path) -> None:
    made = await git_delivery(tmp_path, spec(), restoring=True)
    assert made.info.change == "restore the champion-only config"


async def test_pull_request_branch_is_the_same_for_the_same_change(tmp_path: Path) -> None:
    first = await git_delivery(tmp_path, spec("PullRequest"))
    again = await git_delivery(tmp_path, spec("PullRequest"))
    assert first.branch_for(AB) == again.branch_for(AB)
    assert first.branch_for(AB) != first.branch_for(BEFORE)
    assert str(first.branch_for(AB)).startswith("canopy/user1-test-exp-start-the-a-b-test-")
    assert first.forge is None


def test_temporary_git_cache_is_made_when_none_is_configured() -> None:
    workspace = open_git_workspace(Settings())
    try:
        assert workspace.cache_dir.is_dir()
        assert workspace.cache_dir.name.startswith("canopy-git-cache-")
        assert workspace.policy == GitPolicy(allow_file_repositories=False, allow_insecure_http=False)
    finally:
        workspace.cache_dir.rmdir()


def test_the_git_policy_follows_the_operator_settings(tmp_path: Path) -> None:
    settings = Settings(git_cache_dir=str(tmp_path), allow_file_repositories=True, allow_insecure_http=True)
    assert open_git_workspace(settings).policy == GitPolicy(allow_file_repositories=True, allow_insecure_http=True)


def pr_delivery(tmp_path: Path, seen: ManagedKeys, sha: str) -> GitDelivery:
    made = GitDelivery(
        GitWorkspace(tmp_path),
        target=GitTarget("file:///r.git", namespace="ns"),
        credentials=None,
        info=CommitInfo("ns/exp", "start"),
        pr_branch="canopy/ns-exp-start-1",
    )
    made.seen = Observation(seen, "", sha)
    return made


def track(
    made: GitDelivery,
    st: PromptExperimentStatus,
    current: ManagedKeys,
    sha: str,
    written: tuple[str | None, str | None] = (None, None),
) -> Tracking:
    """The core's bookkeeping for this adapter, as the pass calls it (the adapter's traits, not its type)."""
    traits = made.traits
    return track_delivery(
        st,
        current=current,
        version=sha,
        desired=AB,
        reviewed=traits.reviewed,
        versioned=traits.versioned,
        target=traits.target,
        review_branch=written[0],
        review_url=written[1],
        change=made.info.change,
        now=NOW,
    )


def test_pull_request_waits_for_the_merge_and_links_the_pull_request(tmp_path: Path) -> None:
    made = pr_delivery(tmp_path, BEFORE, "base1")
    st = PromptExperimentStatus(delivery=DeliveryStatus(applied_hash=managed_hash(AB), revision="branch-head"))
    tracked = track(made, st, BEFORE, "base1", ("canopy/ns-exp-start-1", "http://forge/pulls/1"))
    assert tracked.awaiting_review
    st = tracked.status
    assert (st.delivery.branch, st.delivery.pull_request_url) == ("canopy/ns-exp-start-1", "http://forge/pulls/1")
    assert st.delivery.revision == "branch-head"
    assert [reason for _, reason, _ in tracked.events] == ["PullRequestOpened"]


def test_merged_pull_request_records_the_merge_commit_from_the_moment_it_is_seen(tmp_path: Path) -> None:
    made = pr_delivery(tmp_path, AB, "merge1")
    earlier = datetime(2026, 5, 4, 11, 0, tzinfo=UTC)
    delivery = DeliveryStatus(
        applied_hash=managed_hash(AB), revision="branch-head", applied_at=earlier, branch="canopy/ns-exp-start-1"
    )
    tracked = track(made, PromptExperimentStatus(delivery=delivery), AB, "merge1")
    assert not tracked.awaiting_review
    assert (tracked.status.delivery.revision, tracked.status.delivery.applied_at) == ("merge1", NOW)
    assert [reason for _, reason, _ in tracked.events] == ["PullRequestMerged"]
    assert "merged into main (merge1)" in tracked.events[0][2]


def test_push_mode_clears_pull_request_fields_and_keeps_its_commit(tmp_path: Path) -> None:
    made = pr_delivery(tmp_path, AB, "c1")
    made.pr_branch = None
    delivery = DeliveryStatus(applied_hash=managed_hash(AB), revision="c1", branch="old", pull_request_url="u")
    tracked = track(made, PromptExperimentStatus(delivery=delivery), AB, "c1")
    assert not tracked.awaiting_review
    st = tracked.status
    assert (st.delivery.branch, st.delivery.pull_request_url, st.delivery.revision) == (None, None, "c1")


def test_configmap_delivery_has_neither_review_nor_versioned_source() -> None:
    traits = ConfigMapDelivery.traits
    assert (traits.reviewed, traits.versioned) == (False, False)
