"""Git mode end to end: the real operator, the real API server and real git (``file://`` and smart HTTP with
Basic auth on loopback). A test plays Argo CD: every new commit on ``main`` is rendered into the ConfigMap
and the simulator restarts with it, so "applied" means what it means in a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.voters import Pick, post_votes
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from tests.support.argocd import FakeArgoCD
from tests.support.envtest import Kubectl
from tests.support.gitserver import (
    fake_gitea,
    git_http_server,
    history,
    human_commit,
    make_repo,
    merge,
    merge_commits,
    message,
    show,
)
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.kubelet import FakeKubelet, deployment_manifest
from tests.support.values_files import BEFORE_EXPERIMENT, changed_lines

pytestmark = pytest.mark.integration

VALUES = "chart/values-test.yaml"
CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
USER = "user1"
PASSWORD = "gitea-Pa55word-7f3k"
START = BEFORE_EXPERIMENT


@contextlib.asynccontextmanager
async def synced_backend(api: ApiClient, namespace: str, bare: Path, workdir: Path) -> AsyncIterator[FakeKubelet]:
    """The backend Argo CD deploys from ``main`` of ``bare``; restarted on every synced commit."""
    await client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment_manifest())  # type: ignore[arg-type]
    argo = FakeArgoCD(api, namespace, bare, VALUES)
    await argo.start()
    kubelet = FakeKubelet(api, namespace, workdir)
    await kubelet.start()
    try:
        yield kubelet
    finally:
        await argo.stop()
        await kubelet.stop()


async def credentials(api: ApiClient, namespace: str, *allowed: str, password: str = PASSWORD) -> str:
    """The repository's credentials, opted in (label and annotation) for the URL prefixes ``allowed``."""
    body = {
        "metadata": {
            "name": "backend-repo",
            "labels": {"canopy.genaiops.io/credentials": "true"},
            "annotations": {"canopy.genaiops.io/allowed-urls": "\n".join(allowed)},
        },
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": USER, "password": password},
    }
    await client.CoreV1Api(api).create_namespaced_secret(namespace, body)  # type: ignore[arg-type]
    return "backend-repo"


def experiment(url: str, repository: str, secret: str | None = None, **git: Any) -> dict[str, Any]:
    spec_git: dict[str, Any] = {"repository": repository, "valuesFile": VALUES, **git}
    if secret:
        spec_git["credentialsSecret"] = secret
    spec = {
        "backend": {"url": url},
        "challenger": {"prompt": CHALLENGER},
        "analysis": {"interval": "5s"},
        "delivery": {"mode": "Git", "git": spec_git, "verifyTimeout": "60s"},
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": "exp"}, "spec": spec}


async def create(api: ApiClient, namespace: str, body: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


async def status_of(api: ApiClient, namespace: str) -> dict[str, Any]:
    obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "exp")
    status: dict[str, Any] = obj.get("status") or {}
    return status


async def phase_is(api: ApiClient, namespace: str, phase: str) -> bool:
    return (await status_of(api, namespace)).get("phase") == phase


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


def event_messages(kubectl: Kubectl, namespace: str) -> list[tuple[str, str]]:
    items = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [(e.get("reason", ""), e.get("message", "")) for e in items]


def subjects(bare: Path) -> list[tuple[str, str]]:
    return [(author, subject) for _, author, subject in history(bare)]


async def test_push_changes_only_the_managed_lines_and_restore_brings_the_file_back(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    bare = make_repo(tmp_path / "srv", "backend", {VALUES: START, "chart/Chart.yaml": "name: canopy-backend\n"})
    custom = client.CustomObjectsApi(admin_api)
    async with synced_backend(admin_api, namespace, bare, tmp_path) as backend:
        await create(admin_api, namespace, experiment(backend.url, bare.as_uri()))
        with run_operator(operator_kubeconfig, namespace=namespace):
            await wait_for(lambda: phase_is(admin_api, namespace, "Running"), timeout=90, what="phase Running")
            during = show(bare, "main", VALUES)
            log = history(bare)
            status = await status_of(admin_api, namespace)
            await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "exp")

            async def gone() -> bool:
                try:
                    await status_of(admin_api, namespace)
                except client.ApiException as exc:
                    return exc.status == 404
                return False

            await wait_for(gone, timeout=60, what="the experiment to be deleted")
    removed, added = changed_lines(START, during)
    assert sorted(removed) == sorted(["  enabled: false  # thumbs up/down in the UI\n", "  enabled: false\n"])
    assert sorted(added) == sorted(
        ["  prompt_b: |\n", "    " + CHALLENGER, "  enabled: true  # thumbs up/down in the UI\n", "  enabled: true\n"]
    )
    assert [(a, s) for _, a, s in log] == [
        ("canopy-operator", f"canopy: start the A/B test ({namespace}/exp)"),
        ("Ada Human", "Initial values"),
    ]
    assert status["delivery"]["mode"] == "Git"
    assert status["delivery"]["revision"] == log[0][0]
    assert status["delivery"]["verifiedAt"]
    assert "branch" not in status["delivery"]
    assert show(bare, "main", VALUES) == START
    assert subjects(bare)[0] == ("canopy-operator", f"canopy: restore the champion-only config ({namespace}/exp)")


async def test_concurrent_human_commit_is_kept_and_the_edit_reapplied_on_top(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    bare = make_repo(root, "backend", {VALUES: START})
    with git_http_server(root, USER, PASSWORD) as server:
        secret = await credentials(admin_api, namespace, server.url("backend"))

        def human_pushes_first() -> None:
            human_commit(bare, VALUES, lambda t: t.replace("temperature: 0.2", "temperature: 0.3"), "Warmer")

        server.on_push_advertisement.append(human_pushes_first)
        await create(admin_api, namespace, experiment("http://127.0.0.1:9", server.url("backend"), secret))
        with run_operator(operator_kubeconfig, namespace=namespace):

            async def delivered() -> bool:
                return history(bare)[0][1] == "canopy-operator"

            await wait_for(delivered, timeout=60, what="the operator's commit on main")

            # The intent write shows Progressing before the push; the pass's own write records the revision.
            async def recorded() -> bool:
                status = await status_of(admin_api, namespace)
                revision = status.get("delivery", {}).get("revision")
                return status.get("phase") == "Progressing" and revision == history(bare)[0][0]

            await wait_for(recorded, timeout=30, what="Progressing with the pushed revision recorded")
    assert not server.on_push_advertisement, "the human commit was not pushed during the operator's push"
    assert subjects(bare) == [
        ("canopy-operator", f"canopy: start the A/B test ({namespace}/exp)"),
        ("Ada Human", "Warmer"),
        ("Ada Human", "Initial values"),
    ]
    assert merge_commits(bare) == []
    final = show(bare, "main", VALUES)
    assert "  temperature: 0.3\n" in final
    removed, added = changed_lines(START, final)
    assert "  temperature: 0.2\n" in removed
    assert "  temperature: 0.3\n" in added
    assert "  prompt_b: |\n" in added
    assert (await status_of(admin_api, namespace))["delivery"]["revision"] == history(bare)[0][0]


async def test_rejected_credential_is_a_clear_condition_and_the_password_leaks_nowhere(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    kubectl: Kubectl,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "srv"
    bare = make_repo(root, "backend", {VALUES: START})
    wrong = "Wr0ng-but-secret-pa55"
    with git_http_server(root, USER, PASSWORD) as server:
        secret = await credentials(admin_api, namespace, server.url("backend"), password=wrong)
        await create(admin_api, namespace, experiment("http://127.0.0.1:9", server.url("backend"), secret))
        with run_operator(operator_kubeconfig, namespace=namespace) as runner:
            await wait_for(lambda: phase_is(admin_api, namespace, "Degraded"), timeout=45, what="phase Degraded")
        output = runner.output
    status = await status_of(admin_api, namespace)
    degraded = conditions(status)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "GitAuthFailed")
    assert "rejected the credentials" in degraded["message"]
    assert server.rejected_auth > 0
    assert wrong not in json.dumps(status)
    assert all(wrong not in msg for _, msg in event_messages(kubectl, namespace))
    assert wrong not in output
    assert f"{namespace}/exp" in caplog.text
    assert wrong not in caplog.text
    assert subjects(bare) == [("Ada Human", "Initial values")]


async def test_pull_request_mode_opens_one_pull_request_and_applies_only_after_the_merge(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    root = tmp_path / "srv"
    bare = make_repo(root / USER, "backend", {VALUES: START})
    with git_http_server(root, USER, PASSWORD) as server, fake_gitea(USER, PASSWORD) as gitea:
        secret = await credentials(admin_api, namespace, f"http://127.0.0.1:{server.port}/{USER}", gitea.api_url)
        async with synced_backend(admin_api, namespace, bare, tmp_path) as backend:
            pr = {"pullRequest": {"provider": "Gitea", "apiUrl": gitea.api_url}}
            body = experiment(backend.url, server.url(f"{USER}/backend"), secret, method="PullRequest", **pr)
            await create(admin_api, namespace, body)
            with run_operator(operator_kubeconfig, namespace=namespace):

                async def pr_linked() -> bool:
                    return bool((await status_of(admin_api, namespace)).get("delivery", {}).get("pullRequestUrl"))

                await wait_for(pr_linked, timeout=60, what="status.delivery.pullRequestUrl")
                await asyncio.sleep(7)  # more than one poll interval: nothing may count as applied yet
                waiting = await status_of(admin_api, namespace)
                rollouts_before_merge = backend.rollouts
                branch = waiting["delivery"]["branch"]
                merged_sha = merge(bare, branch, "Merge pull request 'canopy: start the A/B test' (#1)")
                gitea.mark_merged(1)
                await wait_for(lambda: phase_is(admin_api, namespace, "Running"), timeout=90, what="phase Running")
    posts = gitea.posts()
    assert len(posts) == 1
    assert (posts[0]["head"], posts[0]["base"]) == (branch, "main")
    assert posts[0]["title"] == f"canopy: start the A/B test ({namespace}/exp)"
    assert branch.startswith(f"canopy/{namespace}-exp-start-the-a-b-test-")
    assert waiting["delivery"]["pullRequestUrl"] == gitea.pulls[0]["html_url"]
    assert waiting["phase"] == "Progressing"
    assert "verifiedAt" not in waiting["delivery"]
    assert rollouts_before_merge == 0
    status = await status_of(admin_api, namespace)
    assert status["delivery"]["revision"] == merged_sha
    assert status["delivery"]["verifiedAt"]
    assert status["delivery"]["branch"] == branch
    assert yaml.safe_load(show(bare, "main", VALUES))["summarize"]["prompt_b"] == CHALLENGER


async def test_full_loop_promotes_the_winner_by_a_commit_argo_cd_deploys(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path, kubectl: Kubectl
) -> None:
    root = tmp_path / "srv"
    bare = make_repo(root, "backend", {VALUES: START})
    challenger: Pick = "challenger"
    champion: Pick = "champion"
    decisive = [challenger] * 25 + [champion] * 5
    picks: list[Pick] = ["tie", "tie", *random.Random(3).sample(decisive, len(decisive))]
    with git_http_server(root, USER, PASSWORD) as server:
        secret = await credentials(admin_api, namespace, server.url("backend"))
        async with synced_backend(admin_api, namespace, bare, tmp_path) as backend:
            await create(admin_api, namespace, experiment(backend.url, server.url("backend"), secret))
            with run_operator(operator_kubeconfig, namespace=namespace):
                await wait_for(lambda: phase_is(admin_api, namespace, "Running"), timeout=90, what="phase Running")
                await post_votes(backend.url, picks)
                await wait_for(lambda: phase_is(admin_api, namespace, "Concluded"), timeout=90, what="Concluded")
                live = backend.simulator.state.config

                def promoted_event() -> bool:
                    return [r for r, _ in event_messages(kubectl, namespace)].count("Promoted") == 1

                await wait_for(promoted_event, timeout=30, what="one Promoted event")
    status = await status_of(admin_api, namespace)
    (promotion, start, _initial) = history(bare)
    assert (promotion[1], promotion[2]) == ("canopy-operator", f"canopy: promote the challenger ({namespace}/exp)")
    assert start[2] == f"canopy: start the A/B test ({namespace}/exp)"
    text = message(bare, promotion[0])
    assert "Votes: challenger 25, champion 5, ties 2" in text
    assert "Always-valid p-value" in text
    assert PASSWORD not in text
    assert status["winner"] == "challenger"
    assert status["promotions"][0]["revision"] == promotion[0] == status["delivery"]["revision"]
    values = yaml.safe_load(show(bare, "main", VALUES))
    assert values["summarize"]["prompt"] == CHALLENGER
    assert "prompt_b" not in values["summarize"]
    assert values["ab_testing"] == {"enabled": False}
    assert live is not None
    assert live.flags["ab_testing"] is False
    assert live.summarize.get("prompt") == CHALLENGER


async def test_human_edit_of_a_managed_key_degrades_without_overwriting_it(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    bare = make_repo(tmp_path / "srv", "backend", {VALUES: START})
    async with synced_backend(admin_api, namespace, bare, tmp_path) as backend:
        await create(admin_api, namespace, experiment(backend.url, bare.as_uri()))
        with run_operator(operator_kubeconfig, namespace=namespace):
            await wait_for(lambda: phase_is(admin_api, namespace, "Running"), timeout=90, what="phase Running")
            human = human_commit(
                bare, VALUES, lambda t: t.replace("    " + CHALLENGER, "    Mine, not yours:\n"), "My challenger"
            )
            await wait_for(lambda: phase_is(admin_api, namespace, "Degraded"), timeout=60, what="phase Degraded")
    degraded = conditions(await status_of(admin_api, namespace))["Degraded"]
    assert degraded["reason"] == "GitConflict"
    assert "summarize.prompt_b" in degraded["message"]
    assert history(bare)[0][0] == human
    assert "    Mine, not yours:\n" in show(bare, "main", VALUES)
