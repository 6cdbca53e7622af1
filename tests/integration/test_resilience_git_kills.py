"""Kill the operator between a Git push and the status write (Git delivery); after a restart nothing is doubled.

Each case runs the whole story in Git mode (``file://`` bare repository, Push method, a test playing Argo CD
that syncs every new commit on ``main`` into the ConfigMap and restarts the simulator): A/B on, 25-5 votes
with 2 ties, promotion. The operator is a child process whose ``CANOPY_FAILPOINTS`` makes it die at
``after-config-write`` (the commit is pushed, the status does not name it yet), then it is restarted
without the failpoint. Afterwards:

- the status counts are exactly the votes posted, and there is exactly one PromotionRecord (challenger);
- ``main`` carries exactly two operator commits on top of the human one (A/B on, promotion): the restarted
  operator adopts the pushed commit instead of pushing it again;
- the values file on ``main`` has the challenger as ``summarize.prompt`` and no ``prompt_b``;
- ``status.delivery.revision`` is the head of ``main``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane import ControlPlane
from canopy_operator.failpoints import EXIT_CODE
from tests.support.argocd import FakeArgoCD
from tests.support.envtest import namespace_name
from tests.support.faults import (
    CHALLENGER,
    CHAMPION,
    SturdyKubelet,
    counted,
    create_experiment,
    cut_connections_tolerated,
    experiment,
    run_until_concluded,
)
from tests.support.gitserver import history, make_repo, show
from tests.support.kubelet import deployment_manifest
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

VOTES = (25, 5, 2)  # challenger, champion, ties: promotes at exactly n = 30 = minVotes
STORY_TIMEOUT = 150.0
VALUES = "chart/values-test.yaml"
#: A human-kept values file before any experiment: no challenger, feedback and A/B testing off.
START = f"""\
# Canopy backend values for the test environment.
LLAMA_STACK_URL: "http://llama-stack.test.svc.cluster.local:8321"   # required by the chart

summarize:
  enabled: true
  model: llama32
  max_tokens: 512
  temperature: 0.2
  prompt: |
    {CHAMPION.strip()}

feedback:
  enabled: false  # thumbs up/down in the UI

ab_testing:
  enabled: false
"""

# Hit 1 of after-config-write is the A/B-on push, hit 2 the promotion push.
CASES = [("after-config-write", 1), ("after-config-write", 2)]


@contextlib.asynccontextmanager
async def synced_backend(api: ApiClient, namespace: str, bare: Path, workdir: Path) -> AsyncIterator[SturdyKubelet]:
    """The backend Argo CD deploys from ``main`` of ``bare``; the simulator restarts on every synced commit."""
    await client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment_manifest())  # type: ignore[arg-type]  # a dict body is accepted
    argo = FakeArgoCD(api, namespace, bare, VALUES)
    await argo.start()
    kubelet = SturdyKubelet(api, namespace, workdir)
    await kubelet.start()
    try:
        yield kubelet
    finally:
        await argo.stop()
        await kubelet.stop()


def git_experiment(url: str, repository: str) -> dict[str, Any]:
    delivery = {"mode": "Git", "git": {"repository": repository, "valuesFile": VALUES}, "verifyTimeout": "60s"}
    return experiment(url, min_votes=VOTES[0] + VOTES[1], delivery=delivery)


async def run_story(
    api: ApiClient, kubeconfig: Path, namespace: str, workdir: Path, failpoints: str
) -> tuple[list[int], dict[str, Any], Path]:
    """Create the experiment, vote once it runs, restart the operator whenever it dies; until Concluded."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - one local mkdir before the story starts
    bare = make_repo(workdir / "srv", "backend", {VALUES: START})
    async with synced_backend(api, namespace, bare, workdir) as kubelet:
        await create_experiment(api, namespace, git_experiment(kubelet.url, bare.as_uri()))
        proc = OperatorProcess(kubeconfig, namespace, workdir / "operator", failpoints=failpoints)
        # 2 s of room for a duplicate push to show up on main.
        exits, status = await run_until_concluded(
            api, namespace, proc, kubelet.url, VOTES, within=STORY_TIMEOUT, settle=2.0
        )
    return exits, status, bare


def check_story(namespace: str, outcome: tuple[list[int], dict[str, Any], Path]) -> None:
    exits, status, bare = outcome
    assert exits == [EXIT_CODE], "the failpoint was not reached exactly once"
    assert counted(status) == VOTES, "votes lost or doubled"
    assert [p["outcome"] for p in status["promotions"]] == ["challenger"], "not exactly one promotion record"
    log = history(bare)
    assert [(author, subject) for _, author, subject in log] == [
        ("canopy-operator", f"canopy: promote the challenger ({namespace}/exp)"),
        ("canopy-operator", f"canopy: start the A/B test ({namespace}/exp)"),
        ("Ada Human", "Initial values"),
    ], "not exactly two operator commits (A/B on, promotion) on main"
    summarize = yaml.safe_load(show(bare, "main", VALUES))["summarize"]
    assert summarize["prompt"] == CHALLENGER
    assert "prompt_b" not in summarize
    assert status["delivery"]["revision"] == log[0][0], "status.delivery.revision is not the head of main"


async def test_kill_after_git_push_neither_pushes_twice_nor_loses_a_vote(
    admin_api: ApiClient, operator_kubeconfig: Path, control_plane: ControlPlane, tmp_path: Path
) -> None:
    names = [namespace_name(f"gitkill-{point}-{hit}") for point, hit in CASES]
    with control_plane.admin_client() as admin:
        for name in names:
            admin.create_or_replace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, "namespaces")
    try:
        with cut_connections_tolerated():
            outcomes = await asyncio.gather(
                *(
                    run_story(admin_api, operator_kubeconfig, name, tmp_path / name, f"{point}:{hit}")
                    for name, (point, hit) in zip(names, CASES, strict=True)
                ),
                return_exceptions=True,
            )
    finally:
        with control_plane.admin_client() as admin:
            for name in names:
                admin.delete(f"/api/v1/namespaces/{name}")
    failures = []
    for name, (point, hit), outcome in zip(names, CASES, outcomes, strict=True):
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            check_story(name, outcome)
        except AssertionError as exc:
            failures.append(f"{point}:{hit}: {exc}")
    assert not failures, "\n\n".join(failures)
