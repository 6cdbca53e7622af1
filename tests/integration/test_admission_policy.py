"""The shipped ValidatingAdmissionPolicy sample, applied to the real API server, pins the URL fields."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_operator.api.base import GROUP, PLURAL, VERSION
from tests.support.envtest import Kubectl

pytestmark = pytest.mark.integration

POLICY = Path(__file__).resolve().parents[2] / "manifests" / "policies" / "promptexperiment-urls.yaml"


@pytest.fixture
def policy(kubectl: Kubectl) -> Iterator[None]:
    """The sample applied for one test, and removed after it (it is cluster-wide)."""
    kubectl("apply", "-f", str(POLICY))
    try:
        yield
    finally:
        kubectl("delete", "-f", str(POLICY), "--ignore-not-found", "--wait=true")


def experiment(name: str, **spec: Any) -> dict[str, Any]:
    body = {"challenger": {"prompt": "Provide a brief, concise summary:"}, **spec}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": name}, "spec": body}


async def refused(api: ApiClient, namespace: str, body: dict[str, Any]) -> str:
    """The API server's refusal message, waiting (bounded) for the policy to take effect."""
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + 30
    while True:
        try:
            await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        except client.ApiException as exc:
            status, message = exc.status, str(exc.body)
            break
        await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body["metadata"]["name"])
        assert time.monotonic() < deadline, "the policy never took effect"
        await asyncio.sleep(0.5)
    assert status in (400, 403, 422), message
    return message


@pytest.mark.usefixtures("policy")
async def test_the_policy_refuses_a_backend_in_another_namespace(admin_api: ApiClient, namespace: str) -> None:
    message = await refused(
        admin_api, namespace, experiment("foreign", backend={"url": "http://canopy-backend.other:8000"})
    )
    assert f"spec.backend.url must name a Service in namespace {namespace}" in message


@pytest.mark.usefixtures("policy")
async def test_the_policy_refuses_a_repository_and_judge_elsewhere(admin_api: ApiClient, namespace: str) -> None:
    git = {"mode": "Git", "git": {"repository": "https://attacker.example/me/backend.git"}}
    assert "spec.delivery.git.repository must start with" in await refused(
        admin_api, namespace, experiment("repo", delivery=git)
    )
    judge = {"enabled": True, "judge": {"endpoint": "http://attacker.example/v1"}}
    assert "spec.evaluation.judge.endpoint must start with" in await refused(
        admin_api, namespace, experiment("judge", evaluation=judge)
    )


@pytest.mark.usefixtures("policy")
async def test_the_policy_admits_the_namespaces_own_service(admin_api: ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(admin_api)
    await refused(admin_api, namespace, experiment("probe", backend={"url": "http://x.elsewhere:1"}))  # in force
    for name, url in (("short", "http://canopy-backend:8000"), ("long", f"http://canopy-backend.{namespace}.svc:8000")):
        created = await custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, experiment(name, backend={"url": url})
        )
        assert created["spec"]["backend"]["url"] == url
