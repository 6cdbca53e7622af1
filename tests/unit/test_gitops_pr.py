"""PullRequest mode: push a branch of our own and open (or reuse) the pull request on a fake Gitea."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from canopy_operator.core.changes import CommitInfo, branch_name, pull_request_text
from canopy_operator.core.values import ManagedKeys, read_managed
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import ForgeError, GitAuthError
from canopy_operator.gitops.forge import Forge, RepoRef, repo_ref
from canopy_operator.gitops.repo import GitTarget, GitWorkspace
from tests.support.gitserver import FakeGitea, GitHttpServer, fake_gitea, git, git_http_server, history, make_repo, show
from tests.support.values_files import REALISTIC

VALUES = "chart/values-test.yaml"
USER, PASSWORD = "user1", "gitea-token-0123456789"
CREDS = GitCredentials(username=USER, password=PASSWORD)
ORIGINAL = read_managed(REALISTIC)
PROMOTE = ManagedKeys(ORIGINAL.prompt_b, None, True, False)
INFO = CommitInfo(
    experiment="user1-test/summary-ab", change="promote challenger", evidence="Challenger won 66 to 34 (mSPRT)."
)
BRANCH = branch_name("user1-test", "summary-ab", "promote challenger", "t-9f8e7d6c5b")


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "srv" / "user1", "backend", {VALUES: REALISTIC})


@pytest.fixture
def server(bare: Path) -> Iterator[GitHttpServer]:
    with git_http_server(bare.parent.parent, USER, PASSWORD) as srv:
        yield srv


@pytest.fixture
def gitea() -> Iterator[FakeGitea]:
    with fake_gitea(USER, PASSWORD) as fake:
        yield fake


async def open_pr(server: GitHttpServer, gitea: FakeGitea, workspace: GitWorkspace) -> tuple[str, int, str]:
    target = GitTarget(repository=server.url("user1/backend"), values_file=VALUES, namespace="user1-test")
    result = await workspace.deliver(target, CREDS, PROMOTE, None, INFO, push_branch=BRANCH)
    title, body = pull_request_text(INFO, target.values_file)
    forge = Forge("Gitea", gitea.api_url, CREDS)
    pr = await forge.ensure_pull_request(repo_ref(target.repository), result.branch, "main", title, body)
    return pr.url, pr.number, result.sha


def test_branch_name_is_readable_and_safe_for_every_forge() -> None:
    assert BRANCH == "canopy/user1-test-summary-ab-promote-challenger-t-9f8e7d"
    assert branch_name("NS", "a_b", "start A/B test", "x") == "canopy/ns-a-b-start-a-b-test-x"


async def test_pull_request_mode_pushes_a_branch_and_opens_one_pull_request(
    server: GitHttpServer, gitea: FakeGitea, bare: Path, tmp_path: Path
) -> None:
    workspace = GitWorkspace(tmp_path / "cache")
    url, number, sha = await open_pr(server, gitea, workspace)
    assert show(bare, "main", VALUES) == REALISTIC
    assert read_managed(show(bare, BRANCH, VALUES)) == PROMOTE
    assert history(bare, BRANCH)[0][0] == sha
    (post,) = gitea.posts()
    assert post["head"] == BRANCH
    assert post["base"] == "main"
    assert post["title"] == "canopy: promote challenger (user1-test/summary-ab)"
    assert "Challenger won 66 to 34 (mSPRT)." in post["body"]
    assert (url, number) == (f"http://127.0.0.1:{gitea.port}/user1/backend/pulls/1", 1)
    assert [c[1] for c in gitea.calls] == ["/api/v1/repos/user1/backend/pulls"] * 2


async def test_pull_request_mode_reuses_the_open_pull_request_on_a_second_run(
    server: GitHttpServer, gitea: FakeGitea, bare: Path, tmp_path: Path
) -> None:
    workspace = GitWorkspace(tmp_path / "cache")
    first = await open_pr(server, gitea, workspace)
    second = await open_pr(server, gitea, workspace)
    assert second == first
    assert len(gitea.posts()) == 1
    assert len(history(bare, BRANCH)) == 2


async def test_pull_request_counts_as_applied_only_after_merge(
    server: GitHttpServer, gitea: FakeGitea, bare: Path, tmp_path: Path
) -> None:
    workspace = GitWorkspace(tmp_path / "cache")
    target = GitTarget(repository=server.url("user1/backend"), values_file=VALUES, namespace="user1-test")
    _, _, sha = await open_pr(server, gitea, workspace)
    assert await workspace.applied(target, CREDS, PROMOTE) is None
    git("update-ref", "refs/heads/main", f"refs/heads/{BRANCH}", cwd=bare)  # the reviewer merges (fast-forward)
    assert await workspace.applied(target, CREDS, PROMOTE) == sha


async def test_forge_rejects_bad_credentials_without_revealing_them(gitea: FakeGitea) -> None:
    forge = Forge("Gitea", gitea.api_url, GitCredentials(username=USER, password="not-" + PASSWORD))
    with pytest.raises(GitAuthError) as info:
        await forge.find_pull_request(RepoRef("user1", "backend"), BRANCH, "main")
    assert "not-" not in str(info.value)
    assert "401" in str(info.value)


async def test_forge_reports_an_unreachable_api_as_a_forge_error() -> None:
    forge = Forge("Gitea", "http://127.0.0.1:9/api/v1", CREDS, time_limit=2)
    with pytest.raises(ForgeError, match="failed"):
        await forge.find_pull_request(RepoRef("user1", "backend"), BRANCH, "main")


def test_repo_ref_reads_owner_and_name_from_every_url_form() -> None:
    for url in (
        "https://gitea.example.com/user1/backend.git",
        "https://gitea.example.com/user1/backend",
        "ssh://git@gitea.example.com:2222/user1/backend.git",
        "git@gitea.example.com:user1/backend.git",
    ):
        assert repo_ref(url) == RepoRef("user1", "backend")
