"""The whole ConfigMap-mode loop on a real API server, with the simulator restarted on every rollout."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.canopy.client import CanopyClient
from canopy_operator.k8s.configmap_delivery import ROLLOUT_ANNOTATION
from tests.support.envtest import Kubectl
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.kubelet import RENDERED_VALUES, FakeKubelet, deployment_manifest
from tests.support.values_files import changed_lines

pytestmark = pytest.mark.integration

CHALLENGER = "Provide a brief, concise summary:\n"
CHAMPION = "Summarize the following text in a clear and detailed manner:\n"


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    core = client.CoreV1Api(admin_api)
    await core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "canopy-config"}, "data": {"canopy-config.yaml": RENDERED_VALUES}},  # type: ignore[arg-type]
    )
    await client.AppsV1Api(admin_api).create_namespaced_deployment(namespace, deployment_manifest())  # type: ignore[arg-type]
    kubelet = FakeKubelet(admin_api, namespace, tmp_path)
    await kubelet.start()
    try:
        yield kubelet
    finally:
        await kubelet.stop()


def experiment(url: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "backend": {"url": url},
        "challenger": {"prompt": CHALLENGER},
        "analysis": {"interval": "5s"},
        "delivery": {"verifyTimeout": "30s"},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": "exp"}, "spec": body}


async def get_exp(api: ApiClient, namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "exp"
    )
    return obj


async def phase_is(api: ApiClient, namespace: str, phase: str) -> bool:
    return (await get_exp(api, namespace)).get("status", {}).get("phase") == phase


async def configmap_text(api: ApiClient, namespace: str) -> str:
    cm = await client.CoreV1Api(api).read_namespaced_config_map("canopy-config", namespace)
    return str(cm.data["canopy-config.yaml"])


async def vote(url: str, challenger: int, champion: int, ties: int, seed: int = 1) -> None:
    """Users vote with a real preference; sides are shuffled as the UI does."""
    rng = random.Random(seed)
    async with CanopyClient(url, timeout=10) as http:
        for i, pick in enumerate(["challenger"] * challenger + ["champion"] * champion + ["tie"] * ties):
            mapping = {"a": "prompt", "b": "prompt_b"} if rng.random() < 0.5 else {"a": "prompt_b", "b": "prompt"}
            if pick == "tie":
                preference = "tie"
            else:
                key = "prompt_b" if pick == "challenger" else "prompt"
                preference = "a" if mapping["a"] == key else "b"
            await http.post_ab_feedback(f"article {seed}-{i}", f"answer a {i}", f"answer b {i}", preference, mapping)


async def test_experiment_turns_on_ab_testing_and_verifies_it(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, kubectl: Kubectl
) -> None:
    custom = client.CustomObjectsApi(admin_api)
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, experiment(backend.url))
    with run_operator(operator_kubeconfig, namespace=namespace):
        await wait_for(lambda: phase_is(admin_api, namespace, "Running"), timeout=45, what="phase Running")
    text = await configmap_text(admin_api, namespace)
    removed, added = changed_lines(RENDERED_VALUES, text)
    assert sorted(removed) == ["  enabled: false\n", "  enabled: false\n"]
    assert sorted(added) == sorted(["  enabled: true\n", "  enabled: true\n", "  prompt_b: |\n", "    " + CHALLENGER])
    dep = await client.AppsV1Api(admin_api).read_namespaced_deployment("canopy-backend", namespace)
    assert dep.spec.template.metadata.annotations[ROLLOUT_ANNOTATION] == hashlib.sha256(text.encode()).hexdigest()
    assert backend.rollouts == 1
    flags = backend.simulator.state.config
    assert flags is not None
    status = (await get_exp(admin_api, namespace))["status"]
    assert status["delivery"]["verifiedAt"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["original"] == {"prompt": CHAMPION, "feedbackEnabled": False, "abTestingEnabled": False}
    shown = kubectl("get", "pexp", "-n", namespace, "--no-headers").stdout
    assert "Running" in shown


async def test_votes_for_the_challenger_promote_it_exactly_once(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, kubectl: Kubectl
) -> None:
    custom = client.CustomObjectsApi(admin_api)
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, experiment(backend.url))
    with run_operator(operator_kubeconfig, namespace=namespace):
        await wait_for(lambda: phase_is(admin_api, namespace, "Running"), timeout=45, what="phase Running")
        await vote(backend.url, challenger=25, champion=5, ties=2)
        await wait_for(lambda: phase_is(admin_api, namespace, "Concluded"), timeout=60, what="phase Concluded")
    status = (await get_exp(admin_api, namespace))["status"]
    assert status["winner"] == "challenger"
    assert status["votes"]["challengerWins"] == 25
    assert status["votes"]["championWins"] == 5
    assert status["votes"]["ties"] == 2
    assert len(status["promotions"]) == 1
    assert status["promotions"][0]["summary"].startswith("challenger preferred 25\u20135 (ties 2)")
    values = yaml.safe_load(await configmap_text(admin_api, namespace))
    assert values["summarize"]["prompt"] == CHALLENGER
    assert "prompt_b" not in values["summarize"]
    assert values["ab_testing"] == {"enabled": False}
    assert values["feedback"] == {"enabled": True}
    assert backend.rollouts == 2
    events = kubectl("get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert events.count("Promoted") == 1


async def test_delete_with_restore_puts_the_original_config_back(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet
) -> None:
    custom = client.CustomObjectsApi(admin_api)
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, experiment(backend.url))
    with run_operator(operator_kubeconfig, namespace=namespace):
        await wait_for(lambda: phase_is(admin_api, namespace, "Running"), timeout=45, what="phase Running")
        await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "exp")

        async def gone() -> bool:
            try:
                await get_exp(admin_api, namespace)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        await wait_for(gone, timeout=30, what="the experiment to be deleted")
    assert await configmap_text(admin_api, namespace) == RENDERED_VALUES


async def test_drift_is_detected_and_reapplied(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, kubectl: Kubectl
) -> None:
    custom = client.CustomObjectsApi(admin_api)
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, experiment(backend.url))
    with run_operator(operator_kubeconfig, namespace=namespace):
        await wait_for(lambda: phase_is(admin_api, namespace, "Running"), timeout=45, what="phase Running")
        applied = await configmap_text(admin_api, namespace)
        reverted = applied.replace("ab_testing:\n  enabled: true", "ab_testing:\n  enabled: false")
        assert reverted != applied
        await client.CoreV1Api(admin_api).patch_namespaced_config_map(
            "canopy-config", namespace, {"data": {"canopy-config.yaml": reverted}}
        )

        async def reapplied() -> bool:
            return await configmap_text(admin_api, namespace) == applied

        await wait_for(reapplied, timeout=30, what="the experiment's config to be re-applied")

        async def drift_event_posted() -> bool:
            # Kopf posts events from a background queue: wait while the operator still runs.
            reasons = kubectl("get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}").stdout.split()
            return "ConfigDrift" in reasons

        await wait_for(drift_event_posted, timeout=30, what="the ConfigDrift event")
    status = (await get_exp(admin_api, namespace))["status"]
    drift = {c["type"]: c for c in status["conditions"]}["ConfigDrift"]
    assert "changed outside the experiment" in drift["message"]


async def test_missing_configmap_is_a_clear_condition(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str
) -> None:
    custom = client.CustomObjectsApi(admin_api)
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, experiment("http://127.0.0.1:9"))
    with run_operator(operator_kubeconfig, namespace=namespace):
        await wait_for(lambda: phase_is(admin_api, namespace, "Degraded"), timeout=30, what="phase Degraded")
    status = (await get_exp(admin_api, namespace))["status"]
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["reason"] == "ConfigMapMissing"
    assert "canopy-config" in degraded["message"]
