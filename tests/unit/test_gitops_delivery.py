"""The Git delivery seen through the reconcile's read/write protocol (real git over file://)."""

from __future__ import annotations

from pathlib import Path

import pytest

from canopy_operator.core.changes import CommitInfo
from canopy_operator.core.values import ManagedKeys, managed_hash, read_managed
from canopy_operator.delivery.git import GitDelivery, GitDeliveryError
from canopy_operator.gitops.policy import GitPolicy
from canopy_operator.gitops.repo import GitTarget, GitWorkspace
from tests.support.gitserver import history, human_commit, make_repo, show
from tests.support.values_files import REALISTIC

VALUES = "chart/values-test.yaml"
ORIGINAL = read_managed(REALISTIC)
DESIRED = ManagedKeys(ORIGINAL.prompt, "Two sentences at most.", True, True)
INFO = CommitInfo(experiment="user1-test/summary-ab", change="start A/B test")


def delivery(bare: Path, tmp_path: Path, last_applied: ManagedKeys | str | None = None) -> GitDelivery:
    target = GitTarget(repository=bare.as_uri(), values_file=VALUES, namespace="user1-test")
    workspace = GitWorkspace(tmp_path / "cache", policy=GitPolicy(allow_file_repositories=True))
    return GitDelivery(workspace, target, None, INFO, last_applied=last_applied)


async def test_write_then_read_reports_the_commit_as_the_revision(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "srv", "backend", {VALUES: REALISTIC})
    written = await delivery(bare, tmp_path).write(DESIRED)
    seen = await delivery(bare, tmp_path, managed_hash(DESIRED)).read()
    assert written.changed
    assert (seen.keys, seen.version, seen.text) == (DESIRED, written.revision, show(bare, "main", VALUES))
    assert history(bare)[0][0] == written.revision


async def test_write_translates_a_human_conflict_into_a_delivery_error(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "srv", "backend", {VALUES: REALISTIC})
    await delivery(bare, tmp_path).write(DESIRED)
    human_commit(bare, VALUES, lambda t: t.replace("Two sentences at most.", "Mine."), "Human challenger")
    promote = ManagedKeys(DESIRED.prompt_b, None, True, False)
    with pytest.raises(GitDeliveryError) as info:
        await delivery(bare, tmp_path, managed_hash(DESIRED)).write(promote)
    assert info.value.reason == "GitConflict"
    assert "summarize.prompt_b" in str(info.value)
