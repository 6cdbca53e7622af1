"""The whole ConfigMap-mode loop on a real API server, with the simulator restarted on every rollout (issue #4)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.simulator import free_port
from canopy_devkit.simulator.app import answer_chunks
from canopy_operator.delivery.configmap import ROLLOUT_ANNOTATION
from canopy_operator.k8s.errors import Conflict
from canopy_operator.k8s.gateway import ConfigMapView, Gateway
from canopy_operator.sources.canopy.client import CanopyClient
from tests.support.envtest import Kubectl
from tests.support.experiments import (
    CHALLENGER,
    CHAMPION,
    CONFIG_KEY,
    CONFIGMAP,
    ConfigMapWrites,
    Experiments,
    conditions,
    configmap_text,
    deployed_backend,
    event_reasons,
    served_flags,
    vote_like_ui,
)
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.kubelet import RENDERED_VALUES, FakeKubelet
from tests.support.values_files import changed_lines

pytestmark = pytest.mark.integration

#: What delivering the A/B test changes in RENDERED_VALUES, line by line; everything else stays byte-for-byte.
AB_REMOVED = ["  enabled: false\n", "  enabled: false\n"]
AB_ADDED = ["  enabled: true\n", "  enabled: true\n", "  prompt_b: |\n", "    " + CHALLENGER]


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        yield kubelet


@pytest.fixture
def exp(admin_api: ApiClient, namespace: str) -> Experiments:
    return Experiments(admin_api, namespace)


def assert_only_ab_keys_changed(text: str) -> None:
    removed, added = changed_lines(RENDERED_VALUES, text)
    assert sorted(removed) == sorted(AB_REMOVED)
    assert sorted(added) == sorted(AB_ADDED)


async def rollout_annotation(api: ApiClient, namespace: str) -> str | None:
    dep = await client.AppsV1Api(api).read_namespaced_deployment("canopy-backend", namespace)
    value = (dep.spec.template.metadata.annotations or {}).get(ROLLOUT_ANNOTATION)
    return str(value) if value is not None else None


async def test_experiment_turns_on_ab_testing_and_verifies_it(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    backend: FakeKubelet,
    exp: Experiments,
    kubectl: Kubectl,
) -> None:
    await exp.create(backend.url)
    with run_operator(operator_kubeconfig, namespace=namespace):
        status = await exp.wait_phase("Running")

        async def verified_event_posted() -> bool:
            return "ConfigVerified" in event_reasons(kubectl, namespace)

        await wait_for(verified_event_posted, timeout=30, what="the ConfigVerified event")
    text = await configmap_text(admin_api, namespace)
    assert_only_ab_keys_changed(text)
    assert await rollout_annotation(admin_api, namespace) == hashlib.sha256(text.encode()).hexdigest()
    assert backend.rollouts == 1
    flags = await served_flags(backend.url)
    assert (flags["feedback"], flags["ab_testing"]) == (True, True)
    async with CanopyClient(backend.url, timeout=10) as http:
        answers = await http.summarize_ab("A long article.")
    assert answers.answer_of("prompt_b") == "".join(answer_chunks(CHALLENGER, "A long article."))
    assert answers.answer_of("prompt") == "".join(answer_chunks(CHAMPION, "A long article."))
    assert status["delivery"]["verifiedAt"]
    assert conditions(status)["Ready"]["status"] == "True"
    assert status["original"] == {"prompt": CHAMPION, "feedbackEnabled": False, "abTestingEnabled": False}
    assert "Running" in kubectl("get", "pexp", "-n", namespace, "--no-headers").stdout


async def test_votes_for_the_challenger_promote_it_exactly_once(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    backend: FakeKubelet,
    exp: Experiments,
    kubectl: Kubectl,
) -> None:
    await exp.create(backend.url)
    with run_operator(operator_kubeconfig, namespace=namespace):
        await exp.wait_phase("Running")
        await vote_like_ui(backend.url, ["challenger"] * 25 + ["champion"] * 5 + ["tie"] * 2, tag="promote")
        status = await exp.wait_phase("Concluded")

        async def promoted_event_posted() -> bool:
            return "Promoted" in event_reasons(kubectl, namespace)

        await wait_for(promoted_event_posted, timeout=30, what="the Promoted event")
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
    assert event_reasons(kubectl, namespace).count("Promoted") == 1


def human_edit(kubectl: Kubectl, namespace: str, text: str) -> None:
    """``kubectl patch`` of the values text by a person (no resourceVersion: last write wins for them)."""
    patch = yaml.safe_dump({"data": {CONFIG_KEY: text}})
    kubectl("patch", "configmap", CONFIGMAP, "-n", namespace, "--type", "merge", "-p", patch)


@pytest.mark.parametrize("what", ["unrelated key", "managed key"])
async def test_concurrent_human_edit_is_not_lost(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    backend: FakeKubelet,
    exp: Experiments,
    kubectl: Kubectl,
    monkeypatch: pytest.MonkeyPatch,
    what: str,
) -> None:
    """A person edits the ConfigMap between the operator's read and its write: the write gets 409 and is redone."""
    edited = RENDERED_VALUES.replace("temperature: 0.2", "temperature: 0.5")
    if what == "managed key":  # someone starts their own A/B test by hand at the same moment
        edited = edited.replace("manner:\n", "manner:\n  prompt_b: |\n    A human's challenger:\n")
        edited = edited.replace("ab_testing:\n  enabled: false", "ab_testing:\n  enabled: true")
    conflicts: list[str] = []
    original = Gateway.write_configmap_key

    async def write_racing_a_human(self: Gateway, view: ConfigMapView, key: str, text: str, **kwargs: Any) -> str:
        if not conflicts:
            human_edit(kubectl, view.namespace, edited)  # lands after the operator read `view`
        try:
            return await original(self, view, key, text, **kwargs)
        except Conflict:
            conflicts.append(view.resource_version)
            raise

    monkeypatch.setattr(Gateway, "write_configmap_key", write_racing_a_human)
    await exp.create(backend.url)
    async with ConfigMapWrites(admin_api, namespace) as writes:
        with run_operator(operator_kubeconfig, namespace=namespace):
            await exp.wait_phase("Running")
        await writes.settle()
    text = await configmap_text(admin_api, namespace)
    assert len(conflicts) == 1  # the operator wrote with the resourceVersion it read, and was refused
    assert writes.texts[0] == edited  # the human's write, then the operator's redo on top of it
    assert writes.count == 2
    assert "temperature: 0.5" in text  # the human's unrelated edit survived
    values = yaml.safe_load(text)
    assert values["summarize"]["prompt_b"] == CHALLENGER
    assert (values["feedback"], values["ab_testing"]) == ({"enabled": True}, {"enabled": True})
    if what == "unrelated key":
        removed, added = changed_lines(RENDERED_VALUES.replace("temperature: 0.2", "temperature: 0.5"), text)
        assert (sorted(removed), sorted(added)) == (sorted(AB_REMOVED), sorted(AB_ADDED))
    else:  # the managed keys belong to the running experiment: its values, on top of the human's text
        assert "A human's challenger" not in text
    assert await rollout_annotation(admin_api, namespace) == hashlib.sha256(text.encode()).hexdigest()


async def test_unreachable_backend_is_a_clear_condition_and_recovers_without_partial_write(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, exp: Experiments, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with deployed_backend(admin_api, namespace, tmp_path, port=port, start=False) as kubelet:
        await exp.create(url, delivery={"verifyTimeout": "5s"})
        async with ConfigMapWrites(admin_api, namespace) as writes:
            with run_operator(operator_kubeconfig, namespace=namespace):
                status = await exp.wait_phase("Degraded")
                degraded = conditions(status)["Degraded"]
                assert degraded["reason"] == "VerifyTimeout"
                assert url in degraded["message"]
                assert "expected feedback=true, ab_testing=true and /summarize/ab serving" in degraded["message"]
                text = await configmap_text(admin_api, namespace)
                assert_only_ab_keys_changed(text)  # exactly the desired config, nothing else
                await kubelet.start()  # the pod comes up (with the config as written)
                status = await exp.wait_phase("Running", timeout=90)
            await writes.settle()
    assert writes.texts == [text]  # one write, never redone or half-done
    assert await rollout_annotation(admin_api, namespace) == hashlib.sha256(text.encode()).hexdigest()
    assert conditions(status)["Degraded"]["status"] == "False"
    assert conditions(status)["Ready"]["status"] == "True"


async def test_delete_with_restore_puts_the_original_config_back(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, exp: Experiments
) -> None:
    await exp.create(backend.url)
    with run_operator(operator_kubeconfig, namespace=namespace):
        await exp.wait_phase("Running")
        await exp.delete()

        async def gone() -> bool:
            try:
                await exp.get()
            except client.ApiException as exc:
                return exc.status == 404
            return False

        await wait_for(gone, timeout=30, what="the experiment to be deleted")
    assert await configmap_text(admin_api, namespace) == RENDERED_VALUES


async def test_drift_is_detected_and_reapplied(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    backend: FakeKubelet,
    exp: Experiments,
    kubectl: Kubectl,
) -> None:
    await exp.create(backend.url)
    with run_operator(operator_kubeconfig, namespace=namespace):
        await exp.wait_phase("Running")
        applied = await configmap_text(admin_api, namespace)
        reverted = applied.replace("ab_testing:\n  enabled: true", "ab_testing:\n  enabled: false")
        assert reverted != applied
        await client.CoreV1Api(admin_api).patch_namespaced_config_map(
            CONFIGMAP, namespace, {"data": {CONFIG_KEY: reverted}}
        )

        async def reapplied() -> bool:
            return await configmap_text(admin_api, namespace) == applied

        await wait_for(reapplied, timeout=30, what="the experiment's config to be re-applied")

        async def drift_event_posted() -> bool:
            # Kopf posts events from a background queue: wait while the operator still runs.
            return "ConfigDrift" in event_reasons(kubectl, namespace)

        await wait_for(drift_event_posted, timeout=30, what="the ConfigDrift event")
    status = await exp.status()
    drift = conditions(status)["ConfigDrift"]
    assert "changed outside the experiment" in drift["message"]


async def test_missing_configmap_is_a_clear_condition(
    operator_kubeconfig: Path, namespace: str, exp: Experiments
) -> None:
    await exp.create("http://127.0.0.1:9")
    with run_operator(operator_kubeconfig, namespace=namespace):
        status = await exp.wait_phase("Degraded", timeout=30)
    degraded = conditions(status)["Degraded"]
    assert degraded["reason"] == "ConfigMapMissing"
    assert "canopy-config" in degraded["message"]
