"""A Git server and forge behind a private certificate authority (a self-hosted Gitea's usual HTTPS): the
credentials Secret's ``ca.crt`` is what git and the forge client trust; without it the connection is refused
before any credential is sent, and a ``ca.crt`` that is not a certificate is refused by name."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from canopy_operator.core.changes import CommitInfo
from canopy_operator.core.credentials import Destination
from canopy_operator.core.values import ManagedKeys, read_managed
from canopy_operator.delivery.git import GitDeliveryError
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import ForgeError, GitError
from canopy_operator.gitops.forge import Forge, repo_ref
from canopy_operator.gitops.policy import GitPolicy
from canopy_operator.gitops.repo import GitTarget, GitWorkspace
from canopy_operator.service.credentials import git_credentials
from tests.support.credentials import FakeSecrets, opted_in
from tests.support.gitserver import (
    FakeGitea,
    GitHttpServer,
    fake_gitea,
    git_http_server,
    history,
    make_repo,
    show,
    tls_server_context,
)
from tests.support.values_files import REALISTIC

VALUES = "chart/values-test.yaml"
USER, PASSWORD = "user1", "gitea-token-0123456789"
DESIRED = ManagedKeys(read_managed(REALISTIC).prompt, "Summarize in one sentence.", True, True)
INFO = CommitInfo(experiment="user1-test/summary-ab", change="start A/B test", evidence="Test t-1 started.")


@pytest.fixture
def private_ca(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    return tls_server_context(["127.0.0.1"], tmp_path / "tls")


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "srv" / "user1", "backend", {VALUES: REALISTIC})


@pytest.fixture
def server(bare: Path, private_ca: tuple[ssl.SSLContext, str]) -> Iterator[GitHttpServer]:
    context, _ = private_ca
    with git_http_server(bare.parent.parent, USER, PASSWORD, tls=context) as srv:
        yield srv


@pytest.fixture
def gitea(private_ca: tuple[ssl.SSLContext, str]) -> Iterator[FakeGitea]:
    context, _ = private_ca
    with fake_gitea(USER, PASSWORD, tls=context) as fake:
        yield fake


def workspace(tmp_path: Path) -> GitWorkspace:
    return GitWorkspace(tmp_path / "cache", max_push_attempts=1, timeout=30, policy=GitPolicy())


async def test_push_over_https_trusts_the_private_ca_from_the_secret(
    server: GitHttpServer, bare: Path, private_ca: tuple[ssl.SSLContext, str], tmp_path: Path
) -> None:
    _, ca_pem = private_ca
    target = GitTarget(repository=server.url("user1/backend"), values_file=VALUES, namespace="user1-test")
    assert target.repository.startswith("https://127.0.0.1:")
    credentials = GitCredentials(username=USER, password=PASSWORD, ca_bundle=ca_pem)
    result = await workspace(tmp_path).deliver(target, credentials, DESIRED, None, INFO)
    assert result.changed
    assert history(bare)[0][0] == result.sha
    assert read_managed(show(bare, "main", VALUES)) == DESIRED


async def test_without_the_ca_the_certificate_is_refused_and_no_credential_is_sent(
    server: GitHttpServer, bare: Path, tmp_path: Path
) -> None:
    target = GitTarget(repository=server.url("user1/backend"), values_file=VALUES, namespace="user1-test")
    with pytest.raises(GitError) as info:
        await workspace(tmp_path).deliver(target, GitCredentials(username=USER, password=PASSWORD), DESIRED, None, INFO)
    assert "certificate" in str(info.value).lower()
    assert PASSWORD not in str(info.value)
    assert server.received_auth == []
    assert len(history(bare)) == 1


async def test_the_forge_client_trusts_the_same_ca(gitea: FakeGitea, private_ca: tuple[ssl.SSLContext, str]) -> None:
    _, ca_pem = private_ca
    ref = repo_ref("https://127.0.0.1/user1/backend.git")
    trusted = Forge("Gitea", gitea.api_url, GitCredentials(username=USER, password=PASSWORD, ca_bundle=ca_pem))
    assert await trusted.find_pull_request(ref, "canopy/x", "main") is None
    untrusted = Forge("Gitea", gitea.api_url, GitCredentials(username=USER, password=PASSWORD))
    with pytest.raises(ForgeError, match=r"(?i)certificate"):
        await untrusted.find_pull_request(ref, "canopy/x", "main")
    assert len(gitea.received_auth) == 1


async def test_the_secret_ca_reaches_the_credentials_and_a_bad_one_is_named(
    private_ca: tuple[ssl.SSLContext, str],
) -> None:
    _, ca_pem = private_ca
    url = "https://git.example.com/user1/backend.git"
    where = [Destination("spec.delivery.git.repository", url)]
    good = opted_in("https://git.example.com/", username=USER, password=PASSWORD, **{"ca.crt": ca_pem})
    read = await git_credentials(FakeSecrets(good), "user1-test", "repo", where)
    assert read is not None
    assert read.ca_bundle == ca_pem
    for bad in ("not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        secret = opted_in("https://git.example.com/", username=USER, password=PASSWORD, **{"ca.crt": bad})
        with pytest.raises(GitDeliveryError, match=r"key ca\.crt"):
            await git_credentials(FakeSecrets(secret), "user1-test", "repo", where)
