"""A test's whole life on a real API server (issue #5): A/A, backend restart, operator kill, Manual approval, garbage.

The operator runs in-process as its ServiceAccount user (the shipped RBAC); the fake kubelet restarts the
simulator on every rollout; votes go through the simulator's HTTP endpoints exactly as the Canopy UI sends them.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from canopy_operator.sources.canopy.client import CanopyClient
from tests.support.envtest import Kubectl
from tests.support.experiments import (
    CHALLENGER,
    CHAMPION,
    ConfigMapWrites,
    Experiments,
    PromotionGate,
    conditions,
    configmap_text,
    deployed_backend,
    event_reasons,
    served_flags,
    vote_like_ui,
)
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.kubelet import FakeKubelet

pytestmark = pytest.mark.integration

OLD_CHALLENGER = "Summarize in one short paragraph:\n"


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        yield kubelet


@pytest.fixture
def exp(admin_api: ApiClient, namespace: str) -> Experiments:
    return Experiments(admin_api, namespace)


def serves_challenger(kubelet: FakeKubelet, challenger: str) -> bool:
    """The simulator's current process was started with this ``summarize.prompt_b``."""
    sim = kubelet.simulator
    return sim.running and sim.state.config.summarize.get("prompt_b") == challenger


def votes_of(status: dict[str, Any]) -> tuple[int, int, int]:
    votes = status.get("votes", {})
    return votes.get("challengerWins", 0), votes.get("championWins", 0), votes.get("ties", 0)


async def test_aa_run_ends_without_promotion_keeping_the_champion(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, exp: Experiments
) -> None:
    await exp.create(backend.url, analysis={"interval": "5s", "minVotes": 10, "maxVotes": 10})
    rng = random.Random(20261122)
    sides = [rng.choice("ab") for _ in range(10)]  # both prompts are equally good: users flip a coin
    with run_operator(operator_kubeconfig, namespace=namespace):
        await exp.wait_phase("Running")
        await vote_like_ui(backend.url, sides, tag="aa")
        status = await exp.wait_phase("Concluded")
    assert sum(votes_of(status)[:2]) == 10
    assert status["evidence"]["decision"] == "no_winner"
    assert status["winner"] == "none"
    assert conditions(status)["Promoted"]["status"] == "False"
    assert [p["outcome"] for p in status["promotions"]] == ["no_winner"]
    values = yaml.safe_load(await configmap_text(admin_api, namespace))
    assert values["summarize"]["prompt"] == CHAMPION
    assert "prompt_b" not in values["summarize"]
    assert values["ab_testing"] == {"enabled": False}
    assert values["feedback"] == {"enabled": True}  # promotion.keepFeedback defaults to true
    assert backend.rollouts == 2  # the A/B config, then the champion-only config
    flags = await served_flags(backend.url)
    assert (flags["ab_testing"], flags["feedback"]) == (False, True)  # the running process serves the champion only


async def test_backend_restart_mid_test_neither_loses_nor_doubles_votes(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    backend: FakeKubelet,
    exp: Experiments,
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    await exp.create(backend.url, analysis={"interval": "5s", "minVotes": 1000, "maxVotes": 2000})
    first = ["challenger"] * 6 + ["champion"] * 3 + ["tie"]
    second = ["challenger"] * 4 + ["champion"] * 6 + ["tie"] * 2  # more entries than before: totals do not shrink
    with run_operator(operator_kubeconfig, namespace=namespace):
        await exp.wait_phase("Running")
        await vote_like_ui(backend.url, first, tag="before")
        await exp.wait_status(lambda s: votes_of(s) == (6, 3, 1), "the first 10 votes to be counted")
        config = tmp_path / "same-config.yaml"
        config.write_text(await configmap_text(admin_api, namespace), encoding="utf-8")
        await backend.simulator.restart(config)  # the pod restarts: memory wiped, ids from 1 again
        await vote_like_ui(backend.url, second, tag="after")
        await exp.wait_status(lambda s: votes_of(s) == (10, 9, 3), "all 22 votes to be counted")
        await vote_like_ui(backend.url, ["champion"], tag="later")  # one more poll must not count anything twice
        status = await exp.wait_status(lambda s: votes_of(s) != (10, 9, 3), "the next poll")

        async def restart_reported() -> bool:
            return "BackendRestarted" in event_reasons(kubectl, namespace)

        await wait_for(restart_reported, timeout=30, what="the BackendRestarted event")
    assert votes_of(status) == (10, 10, 3)
    assert len(backend.simulator.state.ab_feedback) == 13  # the backend itself only remembers the second epoch
    assert status["phase"] == "Running"


async def test_operator_killed_between_decision_and_promotion_promotes_exactly_once(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    backend: FakeKubelet,
    exp: Experiments,
    kubectl: Kubectl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = PromotionGate(monkeypatch)
    await exp.create(backend.url)
    async with ConfigMapWrites(admin_api, namespace) as writes:
        with run_operator(operator_kubeconfig, namespace=namespace):
            await exp.wait_phase("Running")
            await vote_like_ui(backend.url, ["challenger"] * 25 + ["champion"] * 5, tag="kill")
            await wait_for(gate.reached.is_set, timeout=60, what="the operator to reach the promotion write")
        # Killed: the decision is recorded, the promotion is not written.
        status = await exp.status()
        assert status["pendingPromotion"]["outcome"] == "challenger"
        assert status.get("promotions", []) == []
        assert yaml.safe_load(await configmap_text(admin_api, namespace))["summarize"]["prompt_b"] == CHALLENGER
        await writes.settle()
        assert writes.count == 1  # only the A/B config
        gate.release()
        with run_operator(operator_kubeconfig, namespace=namespace):
            status = await exp.wait_phase("Concluded")

            async def promoted_event_posted() -> bool:
                return "Promoted" in event_reasons(kubectl, namespace)

            await wait_for(promoted_event_posted, timeout=30, what="the Promoted event")
        await writes.settle()
    assert len(status["promotions"]) == 1
    assert status["promotions"][0]["outcome"] == "challenger"
    assert conditions(status)["Promoted"]["status"] == "True"
    assert writes.count == 2  # the A/B config, then the promotion: once
    promoted = yaml.safe_load(writes.texts[1])
    assert promoted["summarize"]["prompt"] == CHALLENGER
    assert "prompt_b" not in promoted["summarize"]
    assert backend.rollouts == 2
    reasons = event_reasons(kubectl, namespace)
    assert reasons.count("Decided") == 1
    assert reasons.count("Promoted") == 1


async def test_manual_policy_waits_for_approval_and_ignores_a_stale_one(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, exp: Experiments
) -> None:
    await exp.create(backend.url, challenger={"prompt": OLD_CHALLENGER}, promotion={"policy": "Manual"})
    with run_operator(operator_kubeconfig, namespace=namespace):
        old_test = (await exp.wait_phase("Running"))["test"]["id"]
        await exp.patch_spec({"challenger": {"prompt": CHALLENGER}})  # a new test supersedes the old one
        # Flags alone cannot tell the old pod from the new one here (both serve A/B): wait for the new pod.
        await wait_for(lambda: serves_challenger(backend, CHALLENGER), timeout=60, what="the new pod")
        status = await exp.wait_status(
            lambda s: s.get("test", {}).get("id") not in (None, old_test) and s.get("phase") == "Running",
            "the new test to run",
        )
        test_id = status["test"]["id"]
        assert old_test in [t["testId"] for t in status["testHistory"]]
        await vote_like_ui(backend.url, ["challenger"] * 25 + ["champion"] * 5, tag="manual")
        status = await exp.wait_phase("AwaitingApproval")
        applied = await configmap_text(admin_api, namespace)
        rollouts = backend.rollouts
        assert conditions(status)["AwaitingApproval"]["status"] == "True"
        assert status["evidence"]["decision"] == "challenger"
        assert votes_of(status)[:2] == (25, 5)
        assert status["evidence"]["pValue"] < 0.05
        assert "pendingPromotion" not in status

        await exp.patch_spec({"promotion": {"approved": True, "approvedTestId": old_test}})
        generation = (await exp.get())["metadata"]["generation"]
        status = await exp.wait_status(
            lambda s: s.get("observedGeneration") == generation, "the operator to see the stale approval"
        )
        assert status["phase"] == "AwaitingApproval"
        assert await configmap_text(admin_api, namespace) == applied
        assert backend.rollouts == rollouts

        await exp.patch_spec({"promotion": {"approvedTestId": test_id}})
        status = await exp.wait_phase("Concluded")
    values = yaml.safe_load(await configmap_text(admin_api, namespace))
    assert values["summarize"]["prompt"] == CHALLENGER
    assert "prompt_b" not in values["summarize"]
    assert [p["testId"] for p in status["promotions"]] == [test_id]
    assert conditions(status)["Promoted"]["status"] == "True"
    assert conditions(status)["AwaitingApproval"]["status"] == "False"


BAD_JSON = b'{"total": 40, "prompt_a_wins": 0, "prompt_b_wins": 40, "ties": 0, "entries": [{"id": 1,'
WRONG_TYPES = b'{"total": 40, "prompt_a_wins": 0, "prompt_b_wins": 40, "ties": 0, "entries": [{"id": "one"}]}'


async def test_garbage_from_the_backend_degrades_backs_off_and_recovers(
    operator_kubeconfig: Path,
    namespace: str,
    backend: FakeKubelet,
    exp: Experiments,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    polls: list[tuple[float, bool]] = []  # (when, succeeded) of every GET /feedback/ab the operator makes
    read = CanopyClient.ab_log

    async def counted(self: CanopyClient) -> Any:
        try:
            answer = await read(self)
        except Exception:
            polls.append((time.monotonic(), False))
            raise
        polls.append((time.monotonic(), True))
        return answer

    monkeypatch.setattr(CanopyClient, "ab_log", counted)
    await exp.create(backend.url)
    with run_operator(operator_kubeconfig, namespace=namespace):
        await exp.wait_phase("Running")
        await vote_like_ui(backend.url, ["challenger"] * 10 + ["champion"] * 2, tag="garbage")
        await exp.wait_status(lambda s: votes_of(s) == (10, 2, 0), "the first votes to be counted")

        backend.simulator.faults.garbage = BAD_JSON  # claims 40 challenger wins, but is cut short
        status = await exp.wait_phase("Degraded")
        degraded = conditions(status)["Degraded"]
        assert degraded["reason"] == "BackendProtocolError"
        assert backend.url in degraded["message"]
        assert "GET /feedback/ab" in degraded["message"]

        backend.simulator.faults.garbage = WRONG_TYPES
        status = await exp.wait_status(
            lambda s: "entries" in conditions(s)["Degraded"]["message"], "the wrong types to be reported"
        )
        assert conditions(status)["Degraded"]["reason"] == "BackendProtocolError"
        assert votes_of(status) == (10, 2, 0)  # nothing counted from a partial or malformed answer
        assert status["evidence"]["decision"] == "continue"

        backend.simulator.faults.garbage = None
        status = await exp.wait_phase("Running", timeout=90)
        await vote_like_ui(backend.url, ["challenger"] * 3, tag="healed")
        status = await exp.wait_status(lambda s: votes_of(s) == (13, 2, 0), "votes after recovery", timeout=30)
    assert conditions(status)["Degraded"]["status"] == "False"
    failed = [when for when, ok in polls if not ok]
    assert len(failed) >= 2
    # Backoff: the retry after the first failure waits about twice the 5 s interval, not the interval itself.
    assert failed[1] - failed[0] >= 9.0
