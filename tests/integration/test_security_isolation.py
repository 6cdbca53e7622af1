"""One tenant cannot stall the others: a hostile values text in one namespace, and the operator keeps serving
another namespace at its poll period, and its liveness endpoint keeps answering.

The attack (issue #14, finding 2): a 555-byte alias bomb or about 12 KB of flow nesting in a ``canopy-config``
ConfigMap stalled the single event loop for over a minute; the liveness probe failed, the operator restarted
into the same object, and every experiment in the cluster stopped.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane import ControlPlane
from tests.support.experiments import Experiments, conditions, deployed_backend
from tests.support.kubelet import FakeKubelet
from tests.support.operator_process import OperatorProcess
from tests.support.values_files import alias_bomb, deep_flow_nesting

pytestmark = pytest.mark.integration

HEAD = "LLAMA_STACK_URL: http://llamastack:8321\nsummarize:\n  enabled: true\n  model: llama32\n  prompt: Summarize.\n"
INTERVAL = 5.0
WATCH_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def hostile_namespace(control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    name = f"{namespace[:50]}-hostile"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    with control_plane.admin_client() as admin:
        admin.create_or_replace(body, "namespaces")
    yield name
    with control_plane.admin_client() as admin:
        admin.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        yield kubelet


@pytest.mark.parametrize("hostile", ["alias-bomb", "deep-flow-nesting"])
async def test_a_hostile_configmap_in_one_namespace_stalls_nobody_else(
    operator_kubeconfig: Path,
    admin_api: ApiClient,
    namespace: str,
    hostile_namespace: str,
    backend: FakeKubelet,
    tmp_path: Path,
    hostile: str,
) -> None:
    text = alias_bomb(HEAD) if hostile == "alias-bomb" else deep_flow_nesting(HEAD, 6000)
    configmap = {"metadata": {"name": "canopy-config"}, "data": {"canopy-config.yaml": text}}
    await client.CoreV1Api(admin_api).create_namespaced_config_map(hostile_namespace, configmap)
    await Experiments(admin_api, hostile_namespace).create("http://canopy-backend:8000")
    good = Experiments(admin_api, namespace)
    await good.create(backend.url, analysis={"interval": f"{INTERVAL:.0f}s"})

    health = f"http://127.0.0.1:{free_port()}/healthz"
    operator = OperatorProcess(
        operator_kubeconfig,
        namespace,
        tmp_path / "operator",
        env={"CANOPY_LIVENESS": health, "CANOPY_BACKEND_HOSTS": "127.0.0.1"},
        more_namespaces=(hostile_namespace,),
    )
    operator.start()
    try:
        await good.wait_phase("Running")
        bad = await Experiments(admin_api, hostile_namespace).wait_phase("Degraded")
        degraded = conditions(bad)["Degraded"]
        assert degraded["reason"] == "InvalidValues", degraded
        assert f"ConfigMap {hostile_namespace}/canopy-config" in degraded["message"]

        sim = backend.simulator
        sim.faults.paths = frozenset({"/feedback/ab"})
        sim.faults.delay = 0.001  # counts each poll of the good experiment in faults.hits
        polls: list[float] = []
        slowest_probe = 0.0
        seen = sim.faults.hits
        deadline = time.monotonic() + WATCH_SECONDS
        async with httpx.AsyncClient(timeout=5.0) as probe:
            while time.monotonic() < deadline:
                started = time.monotonic()
                answer = await probe.get(health)
                slowest_probe = max(slowest_probe, time.monotonic() - started)
                assert answer.status_code == 200
                if sim.faults.hits != seen:
                    seen = sim.faults.hits
                    polls.append(time.monotonic())
                await asyncio.sleep(0.2)
    finally:
        operator.stop()
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    assert len(gaps) >= 4, f"the good experiment polled {len(polls)} times in {WATCH_SECONDS:.0f}s"
    assert all(abs(gap - INTERVAL) <= 1.0 for gap in gaps), gaps  # its period, within one second
    assert slowest_probe <= 1.0, f"the liveness endpoint took {slowest_probe:.2f}s"
    print(
        f"\n{hostile}: poll gaps {[round(g, 2) for g in gaps]} s; slowest liveness answer {slowest_probe * 1000:.0f} ms"
    )
