"""An idle Running experiment reads nothing from the API server and polls its backend once per interval over one
kept connection (issue #20, "Scale"; the design: operator/canopy_operator/k8s/watched.py).

The operator runs in-process as its ServiceAccount user (the shipped RBAC, with list/watch on ConfigMaps and
Deployments for the Kopf indexes). The API server's own ``apiserver_request_total`` counts the GETs; the backend
is reached through a TCP proxy that counts connections and notes each request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane import ControlPlane
from canopy_operator.handlers import experiment as handlers
from canopy_operator.k8s.watched import unwatched
from tests.support.experiments import CONFIG_KEY, CONFIGMAP, Experiments, configmap_text, deployed_backend
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.kubelet import FakeKubelet
from tests.support.tcp_proxy import CountingProxy

pytestmark = pytest.mark.integration

INTERVAL = 5.0
"""The shortest poll interval the API allows."""
WINDOW = 4 * INTERVAL + 1.0
POLL = "GET /feedback/ab"
_METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def api_gets(plane: ControlPlane) -> collections.Counter[str]:
    """GET requests the API server has served, by resource (``apiserver_request_total``, every client)."""
    with plane.admin_client() as admin:
        response = admin.request("GET", "/metrics")
    response.raise_for_status()
    counts: collections.Counter[str] = collections.Counter()
    for line in response.text.splitlines():
        match = _METRIC.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("verb") == "GET" and not labels.get("subresource"):
            counts[labels.get("resource", "")] += int(float(match["value"]))
    return counts


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        yield kubelet


async def settle(exp: Experiments, proxy: CountingProxy) -> None:
    """Running, verified, and two polls after that: what follows is the idle steady state."""
    await exp.wait_status(
        lambda s: s.get("phase") == "Running" and bool(s.get("delivery", {}).get("verifiedAt")), "Running, verified"
    )
    polls = len(proxy.times_of(POLL))
    await wait_for(lambda: len(proxy.times_of(POLL)) >= polls + 2, timeout=4 * INTERVAL, what="two idle polls")


@contextlib.asynccontextmanager
async def kubelet_paused(kubelet: FakeKubelet) -> AsyncIterator[None]:
    """The fake kubelet polls the Deployment five times a second (for rollouts, none while idle): stop it for the
    window, so that the API server's counts are the operator's alone."""
    task = kubelet._task
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    try:
        yield
    finally:
        kubelet._task = asyncio.create_task(kubelet._watch())


async def idle_window(
    plane: ControlPlane, proxy: CountingProxy, kubelet: FakeKubelet
) -> tuple[collections.Counter[str], list[float], int]:
    """The API GETs, the backend polls' times and the new TCP connections of ``WINDOW`` seconds of idleness."""
    async with kubelet_paused(kubelet):
        before, accepted, start = api_gets(plane), proxy.accepted, time.monotonic()
        await asyncio.sleep(WINDOW)
        after = api_gets(plane)
    polls = [t for t in proxy.times_of(POLL) if t >= start]
    return after - before, polls, proxy.accepted - accepted


async def test_idle_experiment_makes_no_configmap_or_deployment_reads_and_polls_once_per_interval(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    control_plane: ControlPlane,
    namespace: str,
    backend: FakeKubelet,
) -> None:
    exp = Experiments(admin_api, namespace)
    async with CountingProxy("127.0.0.1", backend.simulator.port) as proxy:
        await exp.create(proxy.url, analysis={"interval": "5s", "minVotes": 1000, "maxVotes": 2000})
        with run_operator(operator_kubeconfig, namespace=namespace):
            await settle(exp, proxy)
            gets, polls, connections = await idle_window(control_plane, proxy, backend)
            assert (gets["configmaps"], gets["deployments"]) == (0, 0), f"GETs in {WINDOW:g}s idle: {dict(gets)}"
            assert len(polls) in (4, 5)  # one per interval: 21 s hold four or five 5 s (+-5 %) periods
            gaps = [b - a for a, b in itertools.pairwise(polls)]
            assert all(0.9 * INTERVAL <= gap <= 1.15 * INTERVAL for gap in gaps), gaps
            assert connections == 0  # the daemon's pooled client keeps its connection (aiohttp keeps it 75 s)

            # Drift is still seen: a hand edit reaches the operator through the watch and is read once.
            applied = await configmap_text(admin_api, namespace)
            edited = applied.replace("ab_testing:\n  enabled: true", "ab_testing:\n  enabled: false")
            assert edited != applied
            await client.CoreV1Api(admin_api).patch_namespaced_config_map(
                CONFIGMAP, namespace, {"data": {CONFIG_KEY: edited}}
            )

            async def reapplied() -> bool:
                return await configmap_text(admin_api, namespace) == applied

            await wait_for(reapplied, timeout=30, what="the hand edit to be seen and the config re-applied")


async def test_without_the_watch_each_idle_pass_reads_the_configmap(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    control_plane: ControlPlane,
    namespace: str,
    backend: FakeKubelet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: the same window with every read going to the API server (as before issue #20) counts one
    ConfigMap GET per pass, so the zero above is the watch's doing, not a blind metric."""
    monkeypatch.setattr(handlers, "_versions", lambda *_: unwatched)
    exp = Experiments(admin_api, namespace)
    async with CountingProxy("127.0.0.1", backend.simulator.port) as proxy:
        await exp.create(proxy.url, analysis={"interval": "5s", "minVotes": 1000, "maxVotes": 2000})
        with run_operator(operator_kubeconfig, namespace=namespace):
            await settle(exp, proxy)
            gets, polls, _ = await idle_window(control_plane, proxy, backend)
    assert gets["configmaps"] >= len(polls) >= 4


ROLLOUT_SECONDS = 4.0
"""How long the fake kubelet's rollout takes here: longer than the old 2 s poll, well short of the 10 s net."""


async def test_a_rollout_is_waited_for_by_the_watch_and_the_old_pods_are_not_asked(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet
) -> None:
    """While the Deployment rolls out the daemon sleeps (no pass every 2 s, no question to the old pods); the
    Deployment's status change, seen by the watch, wakes it at once (the safety-net poll is 10 s away)."""
    report = backend._report_rollout
    reported: list[float] = []

    async def slow_rollout() -> None:
        if backend.rollouts:  # the operator's roll, not the kubelet's start
            await asyncio.sleep(ROLLOUT_SECONDS)
            reported.append(time.monotonic())
        await report()

    backend._report_rollout = slow_rollout  # type: ignore[method-assign]
    exp = Experiments(admin_api, namespace)
    async with CountingProxy("127.0.0.1", backend.simulator.port) as proxy:
        await exp.create(proxy.url, analysis={"interval": "60s", "minVotes": 1000, "maxVotes": 2000})
        with run_operator(operator_kubeconfig, namespace=namespace):
            await exp.wait_status(
                lambda s: s.get("phase") == "Running" and bool(s.get("delivery", {}).get("verifiedAt")),
                "Running, verified",
            )
            running = time.monotonic()
    assert len(reported) == 1, reported
    assert running - reported[0] < 2.5, f"Running {running - reported[0]:.1f}s after the rollout finished"
    rolling = (reported[0] - ROLLOUT_SECONDS + 0.3, reported[0])
    asked = [t for t in proxy.times_of("GET /feature-flags") if rolling[0] <= t <= rolling[1]]
    assert asked == [], f"{len(asked)} flag probes of the old pods while the rollout ran"
