"""Acting on a running experiment with plain spec fields, on a real API server with the real operator:
spec.suspend (nothing read or written, every count kept, resume goes on), spec.abort (the test ends, the
champion-only config is delivered once), and Shadow mode (a decision on an A/B test someone else runs,
with the config never written)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from tests.support.envtest import Kubectl
from tests.support.experiments import (
    CHALLENGER,
    ConfigMapWrites,
    Experiments,
    conditions,
    configmap_text,
    deployed_backend,
    event_reasons,
    vote_like_ui,
)
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.kubelet import RENDERED_VALUES, FakeKubelet

pytestmark = pytest.mark.integration

#: The backend as a team runs its own A/B test: the challenger and both flags already on.
AB_VALUES = (
    RENDERED_VALUES.replace("manner:\n", "manner:\n  prompt_b: |\n    " + CHALLENGER)
    .replace("feedback:\n  enabled: false", "feedback:\n  enabled: true")
    .replace("ab_testing:\n  enabled: false", "ab_testing:\n  enabled: true")
)


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        yield kubelet


async def test_suspend_stops_reading_and_writing_and_resume_goes_on_from_there(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, kubectl: Kubectl
) -> None:
    exp = Experiments(admin_api, namespace)
    await exp.create(backend.url)
    with run_operator(operator_kubeconfig, namespace=namespace):
        await exp.wait_phase("Running")
        await vote_like_ui(backend.url, ["challenger"] * 4 + ["champion"] * 2, tag="before")
        await exp.wait_status(lambda s: s["votes"].get("challengerWins") == 4, "the first votes")
        await exp.patch_spec({"suspend": True})
        suspended = await exp.wait_phase("Suspended")
        polled = suspended["collection"]["lastPollTime"]
        async with ConfigMapWrites(admin_api, namespace) as writes:
            await vote_like_ui(backend.url, ["challenger"] * 3, tag="while-suspended")
            # three poll intervals: nothing is read (the read position and its time stay), nothing written
            await asyncio.sleep(16)
            still = await exp.status()
            assert writes.count == 0
        assert still["phase"] == "Suspended"
        assert still["collection"]["lastPollTime"] == polled
        assert still["votes"]["challengerWins"] == 4
        assert still["message"].startswith("suspended by spec.suspend since ")
        assert still["progress"] == "6/30 votes"
        await exp.patch_spec({"suspend": False})
        resumed = await exp.wait_status(
            lambda s: s.get("phase") == "Running" and s["votes"].get("challengerWins") == 7, "the resumed count"
        )

        async def events_posted() -> bool:
            reasons = event_reasons(kubectl, namespace)
            return "Suspended" in reasons and "Resumed" in reasons

        await wait_for(events_posted, timeout=30, what="the Suspended and Resumed events")
    assert "suspendedAt" not in resumed
    assert resumed["votes"]["championWins"] == 2
    assert backend.rollouts == 1


async def test_abort_ends_the_test_and_delivers_the_champion_alone_once(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, kubectl: Kubectl
) -> None:
    exp = Experiments(admin_api, namespace)
    await exp.create(backend.url)
    with run_operator(operator_kubeconfig, namespace=namespace):
        await exp.wait_phase("Running")
        await vote_like_ui(backend.url, ["challenger"] * 3 + ["champion"], tag="abort")
        await exp.wait_status(lambda s: s["votes"].get("challengerWins") == 3, "the votes")
        await exp.patch_spec({"abort": True})
        status = await exp.wait_phase("Aborted")
        async with ConfigMapWrites(admin_api, namespace) as writes:
            await asyncio.sleep(11)  # two more passes: the aborted test stays aborted, nothing is written again
            assert writes.count == 0
        # a changed spec does not start a new test while abort is true
        await exp.patch_spec({"challenger": {"prompt": "Yet another challenger:\n"}})
        await asyncio.sleep(6)
        after = await exp.status()

        async def aborted_events() -> bool:
            reasons = event_reasons(kubectl, namespace)
            return "Aborted" in reasons and "AbortCompleted" in reasons

        await wait_for(aborted_events, timeout=60, what="the Aborted and AbortCompleted events")
    values = yaml.safe_load(await configmap_text(admin_api, namespace))
    assert "prompt_b" not in values["summarize"]
    assert values["ab_testing"] == {"enabled": False}
    assert values["summarize"]["prompt"].startswith("Summarize the following text")
    record = status["promotions"][-1]
    assert (record["outcome"], record["challengerWins"], record["championWins"]) == ("aborted", 3, 1)
    assert status["winner"] == "none"
    assert status["progress"] == "aborted"
    assert conditions(status)["Promoted"]["status"] == "False"
    assert (after["phase"], after["test"]["id"]) == ("Aborted", status["test"]["id"])
    assert backend.rollouts == 2  # the A/B test, then the champion alone


async def test_shadow_mode_decides_on_the_running_ab_test_and_writes_nothing(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path, kubectl: Kubectl
) -> None:
    async with deployed_backend(admin_api, namespace, tmp_path, values=AB_VALUES) as kubelet:
        before = await client.CoreV1Api(admin_api).read_namespaced_config_map("canopy-config", namespace)
        exp = Experiments(admin_api, namespace)
        await exp.create(
            kubelet.url, delivery={"mode": "Shadow", "verifyTimeout": "30s"}, promotion={"policy": "Manual"}
        )
        with run_operator(operator_kubeconfig, namespace=namespace):
            await exp.wait_phase("Running")
            await vote_like_ui(kubelet.url, ["challenger"] * 25 + ["champion"] * 5, tag="shadow")
            status = await exp.wait_phase("Concluded")

            async def concluded_event() -> bool:
                return "ShadowConcluded" in event_reasons(kubectl, namespace)

            await wait_for(concluded_event, timeout=30, what="the ShadowConcluded event")
        after = await client.CoreV1Api(admin_api).read_namespaced_config_map("canopy-config", namespace)
        rollouts = kubelet.rollouts
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.data == before.data
    assert rollouts == 0
    assert status["winner"] == "challenger"
    assert status["promotions"][-1]["revision"] == "shadow: nothing written"
    assert conditions(status)["Promoted"]["status"] == "False"
    points = status["trajectory"]
    assert 2 <= len(points) <= 120
    assert points[-1]["decisiveVotes"] == 30
    assert points[-1]["lower"] > 0.5  # the sequence excludes one half: that is the decision


async def test_shadow_mode_on_a_backend_running_another_test_says_so(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet
) -> None:
    exp = Experiments(admin_api, namespace)
    await exp.create(backend.url, delivery={"mode": "Shadow"})
    with run_operator(operator_kubeconfig, namespace=namespace):
        status = await exp.wait_phase("Degraded")
    degraded = conditions(status)["Degraded"]
    assert degraded["reason"] == "ShadowMismatch"
    assert "summarize.prompt_b is not spec.challenger" in degraded["message"]
    assert "feedback and ab_testing must both be enabled" in degraded["message"]
    assert backend.rollouts == 0
