"""Two replicas of the operator with leader election, on a real API server (docs/high-availability.md).

Both replicas are real processes (``python -m canopy_operator.cli run``) with ``CANOPY_LEADER_ELECTION`` on and the
Lease in the test's namespace, run as the operator's ServiceAccount user with the shipped RBAC and client-go's
timing (15 s lease, 10 s renew deadline, 2 s retry):

- only the Lease holder acts: the other one's log shows nothing but standing by (no Kopf, no pass) until it
  takes over;
- SIGKILL of the holder in the middle of a test (votes counted, no decision yet): the other one takes the Lease
  within the lease duration and a retry, finishes the test, and the promotion happens exactly once: one
  PromotionRecord, one promotion write of the ConfigMap (watched), one rollout for it, one ``Promoted`` event;
- SIGTERM of the holder hands over at once: it releases the Lease and the other one takes it at its next try.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_operator.core.leader import JITTER, Timing
from canopy_operator.service.settings import DEFAULT_LEASE_NAME
from tests.support.envtest import Kubectl
from tests.support.experiments import (
    CHALLENGER,
    ConfigMapWrites,
    Experiments,
    deployed_backend,
    event_reasons,
    vote_like_ui,
)
from tests.support.kopf_runner import wait_for
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TIMING = Timing()
TAKEOVER_BOUND = TIMING.lease_duration + TIMING.retry * (1 + JITTER) + 8.0
"""SIGKILL to the other replica holding the Lease: the lease duration, counted from the other's last sight of a
renewal (at most a retry before the kill), a try, and slack for 2 shared cores."""
HANDOVER_BOUND = TIMING.retry * (1 + JITTER) + 5.0
"""SIGTERM to the other replica holding the Lease: the holder stops Kopf and releases the Lease (under a second
here), the other takes it at its next try, and slack; far below the lease duration."""
STANDBY_LOGGER = "canopy_operator.leader"


def records(proc: OperatorProcess) -> list[dict[str, Any]]:
    """The process's JSON log records (lines that are not JSON left out)."""
    out = []
    for line in proc.log().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out


def identity(proc: OperatorProcess) -> str | None:
    """The name the process stands for election under (its first log line about the election says it)."""
    for record in records(proc):
        if record.get("event") == "leader_election_started":
            return str(record["identity"])
    return None


def elected(proc: OperatorProcess) -> bool:
    return any(record.get("event") == "leader_elected" for record in records(proc))


def before_election(proc: OperatorProcess) -> list[dict[str, Any]]:
    """What the process logged while it stood by (everything, if it never led)."""
    found = records(proc)
    for index, record in enumerate(found):
        if record.get("event") == "leader_elected":
            return found[:index]
    return found


def assert_stood_by(proc: OperatorProcess) -> None:
    """Nothing but the election while standing by: no Kopf (no handler, no finalizer, no annotation), no pass."""
    loggers = {str(record.get("logger")) for record in before_election(proc)}
    assert loggers <= {STANDBY_LOGGER}, f"a standby did more than stand by ({loggers}):\n{proc.tail()}"
    events = {record.get("event") for record in before_election(proc)}
    assert "leader_waiting" in events, proc.tail()


async def lease(api: ApiClient, namespace: str) -> Any:
    try:
        return await client.CoordinationV1Api(api).read_namespaced_lease(DEFAULT_LEASE_NAME, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def holder(api: ApiClient, namespace: str) -> str | None:
    found = await lease(api, namespace)
    return found.spec.holder_identity if found is not None else None


def replicas(kubeconfig: Path, namespace: str, workdir: Path) -> tuple[OperatorProcess, OperatorProcess]:
    env = {"CANOPY_LEADER_ELECTION": "true", "CANOPY_LEADER_ELECTION_NAMESPACE": namespace}
    return (
        OperatorProcess(kubeconfig, namespace, workdir / "replica-a", env=env),
        OperatorProcess(kubeconfig, namespace, workdir / "replica-b", env=env),
    )


@contextlib.asynccontextmanager
async def running(*procs: OperatorProcess) -> AsyncIterator[None]:
    """Start every replica at once (they race for the Lease); stop the ones still running at the end."""
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


async def leader_and_standby(
    api: ApiClient, namespace: str, a: OperatorProcess, b: OperatorProcess
) -> tuple[OperatorProcess, OperatorProcess]:
    """Which replica holds the Lease (by its identity in the Lease), once one says it leads and the other that it
    stands by."""

    def waiting(proc: OperatorProcess) -> bool:
        return any(record.get("event") == "leader_waiting" for record in records(proc))

    async def one_leads() -> bool:
        current = await holder(api, namespace)
        if current is None or current not in (identity(a), identity(b)):
            return False
        return (elected(a) and waiting(b)) or (elected(b) and waiting(a))

    await wait_for(one_leads, timeout=60, what=f"one replica to hold the Lease\n{a.tail()}\n---\n{b.tail()}")
    return (a, b) if await holder(api, namespace) == identity(a) else (b, a)


def promotion_writes(texts: list[str]) -> list[str]:
    """ConfigMap values after writes that promote the challenger (it becomes the prompt, the A/B test ends)."""
    promoted = []
    for text in texts:
        summarize = (yaml.safe_load(text) or {}).get("summarize") or {}
        if summarize.get("prompt") == CHALLENGER and "prompt_b" not in summarize:
            promoted.append(text)
    return promoted


def votes_of(status: dict[str, Any]) -> tuple[int, int, int]:
    votes = status.get("votes") or {}
    return votes.get("challengerWins", 0), votes.get("championWins", 0), votes.get("ties", 0)


async def test_only_the_leader_acts_and_a_killed_leader_is_replaced_and_promotes_once(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path, kubectl: Kubectl
) -> None:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        exp = Experiments(admin_api, namespace)
        await exp.create(kubelet.url)  # minVotes 30: 15-3 cannot decide, 25-5 promotes the challenger
        a, b = replicas(operator_kubeconfig, namespace, tmp_path)
        async with ConfigMapWrites(admin_api, namespace) as writes, running(a, b):
            leader, standby = await leader_and_standby(admin_api, namespace, a, b)
            await exp.wait_phase("Running")
            await vote_like_ui(kubelet.url, ["tie"] + ["challenger"] * 15 + ["champion"] * 3, tag="before-kill")
            await exp.wait_status(lambda s: votes_of(s) == (15, 3, 1), "the leader to count the first votes")
            assert_stood_by(standby)
            assert not elected(standby)
            assert writes.count == 1, "the A/B test's config, written once, by the leader"

            assert leader.process is not None
            leader.process.kill()  # SIGKILL: no release, no cleanup
            leader.process.wait()
            killed_at = time.monotonic()
            await vote_like_ui(kubelet.url, ["tie"] + ["challenger"] * 10 + ["champion"] * 2, tag="after-kill")
            await wait_for(lambda: elected(standby), timeout=TAKEOVER_BOUND + 5, what=f"the takeover\n{standby.tail()}")
            took = time.monotonic() - killed_at
            status = await exp.wait_phase("Concluded", timeout=60)

            async def promoted_event_posted() -> bool:
                return "Promoted" in event_reasons(kubectl, namespace)

            await wait_for(promoted_event_posted, timeout=30, what="the Promoted event")
            await writes.settle(2.0)  # room for a duplicate write to show
            assert standby.returncode() is None, standby.tail()
            taken = await lease(admin_api, namespace)

    assert took <= TAKEOVER_BOUND, f"the standby took {took:.1f}s to take over"
    assert taken.spec.holder_identity == identity(standby)
    assert taken.spec.lease_transitions == 1
    assert_stood_by(standby)  # until the kill: nothing but standing by
    assert status["winner"] == "challenger"
    assert votes_of(status) == (25, 5, 2)
    assert [p["outcome"] for p in status["promotions"]] == ["challenger"], "not exactly one PromotionRecord"
    assert len(writes.texts) == 2, f"ConfigMap writes: {len(writes.texts)} (want 2: A/B on, promotion)"
    assert len(promotion_writes(writes.texts)) == 1, "not exactly one promotion write"
    assert kubelet.rollouts == 2, f"rollouts: {kubelet.rollouts} (want 2: A/B on, promotion)"
    assert event_reasons(kubectl, namespace).count("Promoted") == 1
    assert standby.stop() == 0, standby.tail()


async def test_a_stopped_leader_hands_over_at_once(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    a, b = replicas(operator_kubeconfig, namespace, tmp_path)
    async with running(a, b):
        leader, standby = await leader_and_standby(admin_api, namespace, a, b)
        assert_stood_by(standby)
        stopped_at = time.monotonic()
        assert leader.stop() == 0, leader.tail()  # SIGTERM: Kopf stops, then the Lease is released
        assert any(r.get("event") == "leader_released" for r in records(leader)), leader.tail()
        await wait_for(lambda: elected(standby), timeout=HANDOVER_BOUND + 10, what=f"the handover\n{standby.tail()}")
        took = time.monotonic() - stopped_at
        taken = await lease(admin_api, namespace)
        assert standby.stop() == 0, standby.tail()
    # The stop itself (Kopf's graceful stop) is part of `took`; the Lease's duration (15 s) is not.
    assert took <= HANDOVER_BOUND, f"the handover took {took:.1f}s"
    assert taken.spec.holder_identity == identity(standby)
    assert taken.spec.lease_transitions == 1
    after = records(standby)
    assert any(r.get("event") == "leader_released" for r in after), "a stopped standby-turned-leader releases too"
