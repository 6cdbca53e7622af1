"""A backend outside the experiment's namespace is refused by the running operator before any request.

The attack (issue #14, finding 3): ``backend.url`` naming another team's backend made the operator read their
users' feedback into this experiment's status, ledger and dataset Secrets. Here the "other team's backend" is
the simulator on 127.0.0.1, which the operator's default settings (no allow-list) must not reach.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from tests.support.experiments import Experiments, conditions, configmap_text, deployed_backend
from tests.support.kopf_runner import run_operator
from tests.support.kubelet import FakeKubelet

pytestmark = pytest.mark.integration


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        yield kubelet


async def test_a_foreign_backend_is_refused_and_never_called(
    operator_kubeconfig: Path,
    admin_api: ApiClient,
    namespace: str,
    backend: FakeKubelet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CANOPY_BACKEND_HOSTS", raising=False)  # the production default: no allow-list
    backend.simulator.faults.delay = 0.001  # counts every request it answers in faults.hits
    exp = Experiments(admin_api, namespace)
    before = await configmap_text(admin_api, namespace)
    await exp.create(backend.url)
    with run_operator(operator_kubeconfig, namespace=namespace):
        status = await exp.wait_phase("Degraded")
        await asyncio.sleep(2)  # a pass that would call the backend has had time to
    degraded = conditions(status)["Degraded"]
    assert degraded["reason"] == "BackendNotAllowed"
    assert "spec.backend.url names 127.0.0.1" in degraded["message"]
    assert "CANOPY_BACKEND_HOSTS" in degraded["message"]
    assert backend.simulator.faults.hits == 0  # nothing was sent to it
    assert await configmap_text(admin_api, namespace) == before  # and nothing was written for it
    assert backend.rollouts == 0
