"""Git reaches no other namespace and stays within its bounds (issue #14, findings 3, 7 and 12).

The attacks: a ``file://`` repository naming the shared clone cache read another team's private repository into
the author's status; one large repository filled the operator's cache (an emptyDir with a 1 GiB limit, never
evicted) and got the shared operator evicted; a values file could be a symbolic link; ``remote:`` lines reached
status uncapped. Each test wires the delivery as a reconcile pass does (``delivery_for``) and reads through it.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core.redact import Redactor
from canopy_operator.delivery.git import GitDeliveryError
from canopy_operator.gitops.credentials import git_environment
from canopy_operator.gitops.disk import CacheEntry, eviction_order
from canopy_operator.gitops.errors import GitError, GitRepositoryTooLarge
from canopy_operator.gitops.gitcmd import MAX_STDOUT, SizeGuard, classify, run_git
from canopy_operator.gitops.repo import GitWorkspace
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.settings import Settings
from canopy_operator.service.wiring import delivery_for, open_git_workspace
from tests.support.credentials import PASSWORD, USER, FakeSecrets, opted_in
from tests.support.gitserver import GitHttpServer, git, git_http_server, make_repo
from tests.support.values_files import REALISTIC

VALUES = "chart/values-test.yaml"
KIB, MIB = 1024, 1024 * 1024


def workspace(tmp_path: Path, *, allow_file: bool = True, **limits: int) -> GitWorkspace:
    """The process's clone cache as the operator opens it; ``limits`` override its bounds."""
    settings = Settings(
        git_cache_dir=str(tmp_path / "cache"), allow_insecure_http=True, allow_file_repositories=allow_file
    )
    made = open_git_workspace(settings)
    for name, value in limits.items():
        setattr(made, name, value)
    return made


def spec(repository: str, secret: str | None = None) -> PromptExperimentSpec:
    git_spec: dict[str, Any] = {"repository": repository, "valuesFile": VALUES}
    if secret:
        git_spec["credentialsSecret"] = secret
    return PromptExperimentSpec.model_validate(
        {"challenger": {"prompt": "Challenger.\n"}, "delivery": {"mode": "Git", "git": git_spec}}
    )


async def read(ws: GitWorkspace, namespace: str, spec_: PromptExperimentSpec, secrets: Any = None) -> str:
    """The values text the delivery reads for an experiment of ``namespace``."""
    gateway = cast(Gateway, secrets or FakeSecrets())
    made = await delivery_for(gateway, ws, namespace, "exp", spec_, PromptExperimentStatus())
    return (await made.read()).text


async def refusal(
    ws: GitWorkspace, namespace: str, spec_: PromptExperimentSpec, secrets: Any = None
) -> GitDeliveryError:
    with pytest.raises(GitDeliveryError) as info:
        await read(ws, namespace, spec_, secrets)
    return info.value


def clones(ws: GitWorkspace) -> dict[Path, str]:
    """Every clone in the cache and the URL it was cloned from."""
    found = {}
    for dot_git in ws.cache_dir.rglob(".git"):
        if dot_git.is_dir():
            found[dot_git.parent] = git("config", "remote.origin.url", cwd=dot_git.parent).strip()
    return found


def tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*"))


def noise(size: int, seed: int) -> str:
    """Incompressible YAML comment lines of about ``size`` bytes."""
    rng = random.Random(seed)
    lines = [f"# {base64.b64encode(rng.randbytes(57)).decode()}\n" for _ in range(size // 79 + 1)]
    return "".join(lines)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitHttpServer]:
    make_repo(tmp_path / "srv" / "team-a", "private", {VALUES: REALISTIC + "# team A's private values\n"})
    with git_http_server(tmp_path / "srv", USER, PASSWORD) as srv:
        yield srv


# -- file:// and the cache per namespace (finding 3) -------------------------------------------------------
async def test_file_repository_is_refused_unless_the_operator_allows_it(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "srv", "backend", {VALUES: REALISTIC})
    ws = workspace(tmp_path, allow_file=False)
    error = await refusal(ws, "team-b", spec(bare.as_uri()))
    assert clones(ws) == {}
    assert error.reason == "GitRepositoryNotAllowed"
    assert "spec.delivery.git.repository" in str(error)
    assert "CANOPY_ALLOW_FILE_REPOSITORIES" in str(error)


async def test_file_repository_naming_another_namespaces_clone_is_refused_even_when_allowed(
    tmp_path: Path, server: GitHttpServer
) -> None:
    ws = workspace(tmp_path, allow_file=True)
    secrets = FakeSecrets(opted_in(f"http://127.0.0.1:{server.port}/team-a"))
    await read(ws, "team-a", spec(server.url("team-a/private"), "repo"), secrets)
    (theirs,) = clones(ws)
    error = await refusal(ws, "team-b", spec(theirs.as_uri()))
    assert error.reason == "GitRepositoryNotAllowed"
    assert "private values" not in str(error)
    assert list(clones(ws)) == [theirs]


async def test_each_namespace_clones_into_its_own_directory(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "srv", "shared", {VALUES: REALISTIC})
    ws = workspace(tmp_path)
    for namespace in ("team-a", "team-b"):
        assert await read(ws, namespace, spec(bare.as_uri())) == REALISTIC
    dirs = clones(ws)
    assert sorted(path.parent.name for path in dirs) == ["team-a", "team-b"]
    assert len({path.parent.parent for path in dirs}) == 1


# -- bounded clones and cache (finding 7) ------------------------------------------------------------------
async def test_clone_is_partial_and_skips_large_files_it_does_not_read(tmp_path: Path) -> None:
    big = random.Random(7).randbytes(6 * MIB)
    bare = make_repo(tmp_path / "srv", "with-model", {VALUES: REALISTIC, "assets/model.bin": big})
    ws = workspace(tmp_path)
    assert await read(ws, "team-a", spec(bare.as_uri())) == REALISTIC
    assert tree_bytes(ws.cache_dir) < 1 * MIB


async def test_repository_whose_clone_exceeds_the_bound_is_refused_before_the_values_are_read(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {f"data/part-{i:05d}.txt": f"{i}\n" for i in range(3000)}
    bare = make_repo(tmp_path / "srv", "huge-tree", {VALUES: REALISTIC, **files})
    ws = workspace(tmp_path, max_clone_bytes=64 * KIB)
    error = await refusal(ws, "team-a", spec(bare.as_uri()))
    assert error.reason == "GitRepositoryTooLarge"
    assert "spec.delivery.git.repository" in str(error)
    assert "64 KiB" in str(error)
    assert tree_bytes(ws.cache_dir) < 64 * KIB


async def test_values_file_over_one_mib_is_refused(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "srv", "fat", {VALUES: REALISTIC + noise(MIB + 200 * KIB, seed=1)})
    error = await refusal(workspace(tmp_path), "team-a", spec(bare.as_uri()))
    assert error.reason == "GitRepositoryTooLarge"
    assert VALUES in str(error)
    assert "1 MiB" in str(error)


async def test_cache_over_its_budget_drops_the_least_recently_used_clone(tmp_path: Path) -> None:
    repos = {
        name: make_repo(tmp_path / "srv", name, {VALUES: REALISTIC + noise(300 * KIB, seed=i)})
        for i, name in enumerate(("one", "two", "three"))
    }
    ws = workspace(tmp_path, cache_budget_bytes=1600 * KIB)
    for name in ("one", "two", "one", "three"):
        await read(ws, "team-a", spec(repos[name].as_uri()))
    kept = sorted(Path(url).name for url in clones(ws).values())
    assert kept == ["one.git", "three.git"]
    assert tree_bytes(ws.cache_dir) <= 1600 * KIB


# -- what the values file may be (finding 3) ---------------------------------------------------------------
@pytest.mark.parametrize(
    "symlinks",
    [{VALUES: "../real/values.yaml"}, {"chart": "real"}],
    ids=["values-file-is-a-link", "directory-is-a-link"],
)
async def test_symlinked_values_file_is_refused(tmp_path: Path, symlinks: dict[str, str]) -> None:
    real = {"real/values.yaml": REALISTIC, "real/values-test.yaml": REALISTIC}
    bare = make_repo(tmp_path / "srv", "links", real, symlinks=symlinks)
    error = await refusal(workspace(tmp_path), "team-a", spec(bare.as_uri()))
    assert error.reason == "InvalidValues"
    assert "symbolic link" in str(error)


# -- text from the Git server (finding 12) -----------------------------------------------------------------
def test_remote_lines_reach_the_message_capped_and_redacted() -> None:
    stderr = (
        "remote: \x1b[31m" + "Wall of text. " * 400 + f"token={PASSWORD}\x1b[0m\n"
        "remote: " + "x" * 5000 + "\n"
        "fatal: unable to access 'https://git.example.com/a.git/': The requested URL returned error: 500\n"
    )
    error = classify("fetch", stderr, lambda text: text.replace(PASSWORD, "***"))
    message = str(error)
    assert len(message.encode()) <= 400
    assert PASSWORD not in message
    assert "\x1b" not in message
    assert "error: 500" in message


def test_git_error_output_lines_keep_their_order_and_the_fatal_line() -> None:
    stderr = "remote: Counting objects\nremote: " + "y" * 3000 + "\nfatal: repository not found\n"
    message = str(classify("clone", stderr, lambda text: text))
    assert message.startswith("git clone failed: ")
    assert message.endswith("fatal: repository not found")


# -- the bounds themselves ---------------------------------------------------------------------------------
async def test_git_is_stopped_when_its_directory_grows_past_the_guard(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "srv", "heavy", {"blob.bin": random.Random(3).randbytes(8 * MIB)})
    dest = tmp_path / "clone"
    guard = SizeGuard(dest, 256 * KIB, "too large for the test")
    args = ["clone", "--quiet", bare.as_uri(), str(dest)]
    with git_environment(None, allow_file=True) as env, pytest.raises(GitRepositoryTooLarge, match="for the test"):
        await run_git(args, env=env, redactor=Redactor(), guard=guard)


async def test_git_output_beyond_the_cap_is_an_error_not_memory(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "srv", "chatty", {"big.txt": "line\n" * (MAX_STDOUT // 4)})
    with git_environment(None, allow_file=True) as env, pytest.raises(GitError, match="printed more than"):
        await run_git(["cat-file", "-p", "HEAD:big.txt"], env=env, redactor=Redactor(), cwd=bare)


def test_eviction_drops_least_recently_used_first_and_never_a_clone_in_use() -> None:
    entries = [
        CacheEntry(Path("a"), 400, (1, 0.0), busy=False),
        CacheEntry(Path("b"), 400, (0, 5.0), busy=True),  # older, but in use now
        CacheEntry(Path("c"), 400, (3, 0.0), busy=False),
        CacheEntry(Path("d"), 400, (2, 0.0), busy=False),
    ]
    assert eviction_order(entries, budget=900) == [Path("a"), Path("d")]
    assert eviction_order(entries, budget=1600) == []
