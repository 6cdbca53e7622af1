"""Credentials go only where their owner said, and ``file://`` stays off in production: the real operator under its
shipped RBAC, a real API server, and Git and forge servers on loopback that record every credential they receive
(issue #14, findings 1 and 3).

The author (T1) is a user bound to the shipped editor role only: they may create PromptExperiments in the
namespace but cannot read its Secrets. They name a Secret that exists there and point the experiment at a server
of their own; the experiment must degrade with a condition naming the Secret and the field, and the server must
receive nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane import ControlPlane
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from tests.support.envtest import USER_ROLES_PATH, Kubectl
from tests.support.gitserver import fake_gitea, git_http_server, history, make_repo
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.values_files import REALISTIC

pytestmark = pytest.mark.integration

VALUES = "chart/values-test.yaml"
USER = "user1"
PASSWORD = "team-Pa55word-kept-in-a-Secret"
WAIT = 60.0


def author(control_plane: ControlPlane, kubectl: Kubectl, namespace: str) -> Path:
    """A T1 author: the shipped editor role in ``namespace``, nothing else (no Secrets)."""
    kubectl("apply", "-f", str(USER_ROLES_PATH))
    editor = "canopy-operator-promptexperiment-editor"
    kubectl("create", "rolebinding", "t1-author", f"--clusterrole={editor}", "--user=t1-author", "-n", namespace)
    kubeconfig = control_plane.user_kubeconfig("t1-author", ["system:authenticated"])
    can = ("auth", "can-i", "-n", namespace)
    assert kubectl(*can, "get", "secrets", kubeconfig=kubeconfig, check=False).stdout.strip() == "no"
    assert kubectl(*can, "create", PLURAL, kubeconfig=kubeconfig, check=False).stdout.strip() == "yes"
    return kubeconfig


async def team_secret(api: ApiClient, namespace: str, labels: dict[str, str], annotations: dict[str, str]) -> None:
    """The team's Git credentials, created by someone who may (not the author)."""
    body = {
        "metadata": {"name": "team-git", "labels": labels, "annotations": annotations},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": USER, "password": PASSWORD},
    }
    await client.CoreV1Api(api).create_namespaced_secret(namespace, body)  # type: ignore[arg-type]


def experiment(repository: str, using: str | None = "team-git", **git: Any) -> dict[str, Any]:
    spec_git: dict[str, Any] = {"repository": repository, "valuesFile": VALUES, **git}
    if using:
        spec_git["credentialsSecret"] = using
    spec = {
        "backend": {"url": "http://127.0.0.1:9"},
        "challenger": {"prompt": "Provide a brief, concise summary:\n"},
        "analysis": {"interval": "5s"},
        "delivery": {"mode": "Git", "git": spec_git},
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": "exp"}, "spec": spec}


async def status_of(api: ApiClient, namespace: str) -> dict[str, Any]:
    obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "exp")
    status: dict[str, Any] = obj.get("status") or {}
    return status


def degraded(status: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in status.get("conditions", []) if c["type"] == "Degraded" and c["status"] == "True"]
    return found[0] if found else {}


async def settled(api: ApiClient, namespace: str, attack_worked: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The status once the experiment is Degraded, or as soon as the attack worked (so a test of the code as it
    was fails on what leaked, not on a timeout)."""

    async def done() -> bool:
        status = await status_of(api, namespace)
        return bool(degraded(status)) or attack_worked(status)

    await wait_for(done, timeout=WAIT, what="the Degraded condition")
    return await status_of(api, namespace)


def events_text(kubectl: Kubectl, namespace: str) -> str:
    return kubectl("get", "events", "-n", namespace, "-o", "json").stdout


async def test_author_naming_an_unlabelled_secret_gets_degraded_and_their_server_nothing(
    admin_api: ApiClient,
    control_plane: ControlPlane,
    operator_kubeconfig: Path,
    kubectl: Kubectl,
    namespace: str,
    tmp_path: Path,
) -> None:
    make_repo(tmp_path / "srv", "loot", {VALUES: REALISTIC})
    await team_secret(admin_api, namespace, {}, {})
    t1 = author(control_plane, kubectl, namespace)
    with git_http_server(tmp_path / "srv", USER, PASSWORD) as theirs:
        body = experiment(theirs.url("loot"))
        kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), kubeconfig=t1)
        with run_operator(operator_kubeconfig, namespace=namespace) as runner:
            status = await settled(admin_api, namespace, lambda _: bool(theirs.received_auth))
        output = runner.output
    assert theirs.received_auth == []
    condition = degraded(status)
    assert condition["reason"] == "CredentialsNotAllowed"
    assert f"Secret {namespace}/team-git" in condition["message"]
    assert "spec.delivery.git.credentialsSecret" in condition["message"]
    assert "canopy.genaiops.io/credentials" in condition["message"]
    for text in (json.dumps(status), events_text(kubectl, namespace), output):
        assert PASSWORD not in text


async def test_a_labelled_secret_is_not_sent_to_a_forge_it_does_not_name(
    admin_api: ApiClient,
    control_plane: ControlPlane,
    operator_kubeconfig: Path,
    kubectl: Kubectl,
    namespace: str,
    tmp_path: Path,
) -> None:
    bare = make_repo(tmp_path / "srv" / USER, "backend", {VALUES: REALISTIC})
    t1 = author(control_plane, kubectl, namespace)
    with git_http_server(tmp_path / "srv", USER, PASSWORD) as team, fake_gitea(USER, PASSWORD) as foreign:
        team_prefix = f"http://127.0.0.1:{team.port}/{USER}"
        labels = {"canopy.genaiops.io/credentials": "true"}
        await team_secret(admin_api, namespace, labels, {"canopy.genaiops.io/allowed-urls": team_prefix})
        pull_request = {"provider": "Gitea", "apiUrl": foreign.api_url}
        body = experiment(team.url(f"{USER}/backend"), method="PullRequest", pullRequest=pull_request)
        kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), kubeconfig=t1)
        with run_operator(operator_kubeconfig, namespace=namespace):
            status = await settled(admin_api, namespace, lambda _: bool(foreign.received_auth))
    assert foreign.received_auth == []
    assert foreign.calls == []
    assert team.received_auth == []  # refused before anything was sent anywhere
    condition = degraded(status)
    assert condition["reason"] == "CredentialsNotAllowed"
    assert "spec.delivery.git.pullRequest.apiUrl" in condition["message"]
    assert PASSWORD not in json.dumps(status)
    assert [subject for _, _, subject in history(bare)] == ["Initial values"]


async def test_file_repository_is_refused_when_the_operator_flag_is_off(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CANOPY_ALLOW_FILE_REPOSITORIES", "false")  # the production default
    bare = make_repo(tmp_path / "srv", "backend", {VALUES: REALISTIC})
    body = experiment(bare.as_uri(), using=None)
    await client.CustomObjectsApi(admin_api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    with run_operator(operator_kubeconfig, namespace=namespace):
        status = await settled(admin_api, namespace, lambda st: "original" in st)
    assert "original" not in status  # nothing was read from the repository
    condition = degraded(status)
    assert condition["reason"] == "GitRepositoryNotAllowed"
    assert "spec.delivery.git.repository" in condition["message"]
    assert "CANOPY_ALLOW_FILE_REPOSITORIES" in condition["message"]
    assert [subject for _, _, subject in history(bare)] == ["Initial values"]
