"""Git delivery in Push mode against real git over authenticated loopback HTTP (no mocks of git)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from canopy_operator.core.changes import CommitInfo
from canopy_operator.core.values import ManagedKeys, apply_managed, read_managed
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import GitAuthError, GitConflictError, GitPushRejected, GitValuesError
from canopy_operator.gitops.policy import GitPolicy
from canopy_operator.gitops.repo import GitTarget, GitWorkspace
from tests.support.gitserver import (
    GitHttpServer,
    git_http_server,
    history,
    human_commit,
    make_repo,
    merge_commits,
    show,
)
from tests.support.values_files import REALISTIC, changed_lines

VALUES = "chart/values-test.yaml"
NS = "user1-test"
USER, PASSWORD = "user1", "s3cr3t-Pa55:word@x"
ORIGINAL = read_managed(REALISTIC)
DESIRED = ManagedKeys(ORIGINAL.prompt, "Summarize in one sentence.", True, True)
INFO = CommitInfo(experiment="user1-test/summary-ab", change="start A/B test", evidence="Test t-1234 started.")


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "srv", "backend", {VALUES: REALISTIC, "README.md": "backend\n"})


@pytest.fixture
def server(tmp_path: Path, bare: Path) -> Iterator[GitHttpServer]:
    with git_http_server(bare.parent, USER, PASSWORD) as srv:
        yield srv


@pytest.fixture
def workspace(tmp_path: Path) -> GitWorkspace:
    return GitWorkspace(
        tmp_path / "cache", max_push_attempts=3, timeout=30, policy=GitPolicy(allow_file_repositories=True)
    )


def target(server: GitHttpServer) -> GitTarget:
    return GitTarget(repository=server.url("backend"), branch="main", values_file=VALUES, namespace=NS)


CREDS = GitCredentials(username=USER, password=PASSWORD)


async def test_deliver_pushes_only_the_managed_lines_over_authenticated_http(
    server: GitHttpServer, bare: Path, workspace: GitWorkspace, tmp_path: Path
) -> None:
    result = await workspace.deliver(target(server), CREDS, DESIRED, None, INFO)
    pushed = show(bare, "main", VALUES)
    assert result.changed
    assert result.branch == "main"
    assert result.pushed_at is not None
    assert history(bare)[0] == (result.sha, "canopy-operator", "canopy: start A/B test (user1-test/summary-ab)")
    assert pushed == apply_managed(REALISTIC, DESIRED)
    assert changed_lines(REALISTIC, pushed) == (
        [
            "  prompt_b: |-   # challenger\n",
            "    Provide a brief, concise summary:\n",
            "    keep it under three sentences.\n",
        ],
        ["  prompt_b: Summarize in one sentence.   # challenger\n"],
    )
    body = next(p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name == "config").read_text()
    assert PASSWORD not in body
    assert server.url("backend") in body


async def test_deliver_commits_nothing_when_the_file_is_already_as_desired(
    server: GitHttpServer, bare: Path, workspace: GitWorkspace
) -> None:
    first = await workspace.deliver(target(server), CREDS, DESIRED, None, INFO)
    again = await workspace.deliver(target(server), CREDS, DESIRED, DESIRED, INFO)
    assert (again.changed, again.sha, again.pushed_at) == (False, first.sha, None)
    assert len(history(bare)) == 2


async def test_deliver_lands_on_top_of_a_human_commit_pushed_meanwhile(
    server: GitHttpServer, bare: Path, workspace: GitWorkspace
) -> None:
    human: list[str] = []

    def raise_max_tokens() -> None:
        def edit(text: str) -> str:
            return text.replace("max_tokens: 512", "max_tokens: 1024")

        human.append(human_commit(bare, VALUES, edit, "Raise max_tokens"))

    server.on_push_advertisement.append(raise_max_tokens)
    result = await workspace.deliver(target(server), CREDS, DESIRED, None, INFO)
    log = history(bare)
    assert [sha for sha, _, _ in log[:2]] == [result.sha, human[0]]
    assert [author for _, author, _ in log] == ["canopy-operator", "Ada Human", "Ada Human"]
    assert merge_commits(bare) == []
    pushed = show(bare, "main", VALUES)
    assert "max_tokens: 1024" in pushed
    assert read_managed(pushed) == DESIRED


async def test_deliver_refuses_a_human_edit_that_conflicts_with_the_experiment(
    server: GitHttpServer, bare: Path, workspace: GitWorkspace
) -> None:
    await workspace.deliver(target(server), CREDS, DESIRED, None, INFO)
    theirs = human_commit(
        bare, VALUES, lambda t: t.replace("Summarize in one sentence.", "A human's own challenger"), "My test"
    )
    promote = ManagedKeys(DESIRED.prompt_b, None, True, False)
    with pytest.raises(GitConflictError) as info:
        await workspace.deliver(target(server), CREDS, promote, DESIRED, INFO)
    assert info.value.paths == ["summarize.prompt_b"]
    assert history(bare)[0][0] == theirs


async def test_deliver_reports_rejected_credentials_without_revealing_them(
    server: GitHttpServer, bare: Path, workspace: GitWorkspace
) -> None:
    wrong = GitCredentials(username=USER, password="wrong-" + PASSWORD)
    with pytest.raises(GitAuthError) as info:
        await workspace.deliver(target(server), wrong, DESIRED, None, INFO)
    message = str(info.value)
    assert "wrong-" not in message
    assert PASSWORD not in message
    assert f"{USER}:" not in message
    assert "credentials" in message
    assert server.rejected_auth >= 1
    assert len(history(bare)) == 1


async def test_deliver_gives_up_after_bounded_rejected_pushes(
    server: GitHttpServer, bare: Path, workspace: GitWorkspace
) -> None:
    def readme_edit() -> None:
        human_commit(bare, "README.md", lambda text: text + "one more line\n", "Edit README")

    server.on_push_advertisement.extend([readme_edit] * 3)
    with pytest.raises(GitPushRejected, match="rejected 3 times"):
        await workspace.deliver(target(server), CREDS, DESIRED, None, INFO)
    assert [author for _, author, _ in history(bare)] == ["Ada Human"] * 4


async def test_deliver_works_over_a_file_url(bare: Path, workspace: GitWorkspace) -> None:
    local = GitTarget(repository=bare.as_uri(), values_file=VALUES, namespace=NS)
    result = await workspace.deliver(local, None, DESIRED, None, INFO)
    assert result.changed
    assert read_managed(show(bare, "main", VALUES)) == DESIRED
    seen = await workspace.observe(local, None)
    assert (seen.keys, seen.sha) == (DESIRED, result.sha)


async def test_deliver_refuses_a_values_path_outside_the_repository(bare: Path, workspace: GitWorkspace) -> None:
    escaping = GitTarget(repository=bare.as_uri(), values_file="chart/../../../outside.yaml", namespace=NS)
    with pytest.raises(GitValuesError, match="points outside the repository"):
        await workspace.deliver(escaping, None, DESIRED, None, INFO)
