"""Credentials go only where their owner said (issue #14, findings 1 and 11; security-model rule 1).

The attack: an author who may create PromptExperiments but cannot read Secrets names an existing Secret of the
namespace and points ``spec.delivery.git.repository`` (or ``pullRequest.apiUrl``) at a server they run; the
operator sent the Secret's username and password there, over plain ``http://`` too. Each test runs the
operator's wiring against a Git server (or a forge) on 127.0.0.1 that records every ``Authorization`` header it
receives, and checks that nothing arrived and the refusal names the Secret and the field, never the value.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.delivery.base import Delivery
from canopy_operator.delivery.git import GitDeliveryError
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.settings import Settings
from canopy_operator.service.wiring import delivery_for, open_git_workspace
from tests.support.credentials import ALLOWED_URLS as ALLOWED
from tests.support.credentials import LABEL, PASSWORD, USER, FakeSecrets, Secret, opted_in
from tests.support.gitserver import FakeGitea, GitHttpServer, fake_gitea, git_http_server, make_repo
from tests.support.values_files import REALISTIC

NS = "user1-test"
VALUES = "chart/values-test.yaml"
#: What a test machine runs with (loopback, plain HTTP); a refusal of plain HTTP builds its own settings.
LOOPBACK = {"allow_insecure_http": True}


def spec(repository: str, *, using: str | None = "repo", api_url: str | None = None) -> PromptExperimentSpec:
    git: dict[str, Any] = {"repository": repository, "valuesFile": VALUES}
    if using:
        git["credentialsSecret"] = using
    if api_url:
        git |= {"method": "PullRequest", "pullRequest": {"provider": "Gitea", "apiUrl": api_url}}
    return PromptExperimentSpec.model_validate(
        {"challenger": {"prompt": "Challenger.\n"}, "delivery": {"mode": "Git", "git": git}}
    )


async def read_through(
    tmp_path: Path, gateway: FakeSecrets, spec_: PromptExperimentSpec, settings: dict[str, Any] | None = None
) -> Delivery:
    """Wire the delivery as a reconcile pass does and read the values file through it."""
    workspace = open_git_workspace(
        Settings(git_cache_dir=str(tmp_path / "cache"), **(LOOPBACK if settings is None else settings))
    )
    made = await delivery_for(cast(Gateway, gateway), workspace, NS, "exp", spec_, PromptExperimentStatus())
    await made.read()
    return made


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitHttpServer]:
    make_repo(tmp_path / "srv" / "team", "backend", {VALUES: REALISTIC})
    make_repo(tmp_path / "srv" / "team-evil", "backend", {VALUES: REALISTIC})
    with git_http_server(tmp_path / "srv", USER, PASSWORD) as srv:
        yield srv


@pytest.fixture
def gitea() -> Iterator[FakeGitea]:
    with fake_gitea(USER, PASSWORD) as fake:
        yield fake


async def attempt(
    tmp_path: Path, gateway: FakeSecrets, spec_: PromptExperimentSpec, settings: dict[str, Any] | None = None
) -> GitDeliveryError | None:
    """The delivery error of wiring and reading, or None when the values file was read."""
    try:
        await read_through(tmp_path, gateway, spec_, settings)
    except GitDeliveryError as exc:
        return exc
    return None


def refused(error: GitDeliveryError | None, reason: str, *words: str) -> str:
    assert error is not None, "the values file was read: the credentials were used"
    message = str(error)
    assert error.reason == reason, message
    for word in words:
        assert word in message, message
    assert PASSWORD not in message
    return message


async def test_secret_without_the_opt_in_label_is_never_sent_to_the_authors_server(
    tmp_path: Path, server: GitHttpServer
) -> None:
    unlabelled = Secret({"username": USER, "password": PASSWORD})
    error = await attempt(tmp_path, FakeSecrets(unlabelled), spec(server.url("team/backend")))
    assert server.received_auth == []
    refused(error, "CredentialsNotAllowed", f"Secret {NS}/repo", "spec.delivery.git.credentialsSecret", LABEL)


async def test_labelled_secret_without_allowed_urls_is_refused(tmp_path: Path, server: GitHttpServer) -> None:
    no_urls = Secret({"username": USER, "password": PASSWORD}, {LABEL: "true"})
    error = await attempt(tmp_path, FakeSecrets(no_urls), spec(server.url("team/backend")))
    assert server.received_auth == []
    refused(error, "CredentialsNotAllowed", f"Secret {NS}/repo", ALLOWED)


async def test_secret_is_not_sent_to_a_repository_outside_its_allowed_prefixes(
    tmp_path: Path, server: GitHttpServer
) -> None:
    team = f"http://127.0.0.1:{server.port}/team"
    error = await attempt(tmp_path, FakeSecrets(opted_in(team)), spec(server.url("team-evil/backend")))
    assert server.received_auth == []
    refused(error, "CredentialsNotAllowed", f"Secret {NS}/repo", "spec.delivery.git.repository")


async def test_secret_is_sent_to_a_repository_under_an_allowed_prefix(tmp_path: Path, server: GitHttpServer) -> None:
    allowed = f"https://other.example/x,\nHTTP://127.0.0.1:{server.port}/team/"
    made = await read_through(tmp_path, FakeSecrets(opted_in(allowed)), spec(server.url("team/backend")))
    assert made.traits.target == "main"
    assert server.received_auth, "the allowed server received the credentials"


async def test_secret_is_not_sent_over_plain_http_unless_the_operator_allows_it(
    tmp_path: Path, server: GitHttpServer
) -> None:
    allowed = f"http://127.0.0.1:{server.port}/team"
    error = await attempt(tmp_path, FakeSecrets(opted_in(allowed)), spec(server.url("team/backend")), settings={})
    assert server.received_auth == []
    refused(error, "CredentialsNotAllowed", "http://", "CANOPY_ALLOW_INSECURE_HTTP")


async def test_forge_token_is_not_sent_to_an_api_url_outside_the_allowed_prefixes(
    tmp_path: Path, server: GitHttpServer, gitea: FakeGitea
) -> None:
    repository = f"http://127.0.0.1:{server.port}/team"
    forge = f"http://127.0.0.1:{server.port}/api"  # the forge of the repository, not the author's one below
    gateway = FakeSecrets(opted_in(f"{repository}\n{forge}"))
    error = await attempt(tmp_path, gateway, spec(server.url("team/backend"), api_url=gitea.api_url))
    made_contact = server.received_auth + gitea.received_auth
    assert made_contact == []
    refused(error, "CredentialsNotAllowed", "spec.delivery.git.pullRequest.apiUrl")


async def test_short_credentials_are_refused_naming_the_secret_and_key_not_masked(
    tmp_path: Path, server: GitHttpServer
) -> None:
    allowed = f"http://127.0.0.1:{server.port}/team"
    short = opted_in(allowed, username=USER, token="t0k3n7")
    error = await attempt(tmp_path, FakeSecrets(short), spec(server.url("team/backend")))
    assert server.received_auth == []
    message = refused(error, "CredentialsNotAllowed", f"Secret {NS}/repo", "token", "8 characters")
    assert "t0k3n7" not in message


async def test_ssh_key_without_known_hosts_is_refused_naming_the_key(tmp_path: Path) -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    ssh = opted_in("ssh://gitea.example.com/user1", **{"ssh-privatekey": key})
    error = await attempt(tmp_path, FakeSecrets(ssh), spec("git@gitea.example.com:user1/backend.git"))
    message = refused(error, "GitCredentialsMissing", f"Secret {NS}/repo", "known_hosts")
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in message


async def test_repository_without_a_credentials_secret_needs_no_opt_in(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "srv", "public", {VALUES: REALISTIC})
    made = await read_through(
        tmp_path, FakeSecrets(), spec(bare.as_uri(), using=None), {"allow_file_repositories": True}
    )
    assert made.traits.versioned
