"""The status a start computes while its own rollout runs is written once, by the pass that finds the rollout
done (``core/status.defer_write``, issue #20: one status write fewer per start, the costliest kind of write).

A real API server and the operator as a process; the kubelet holds each rollout until the test releases it.

- A first start: nothing is stored in status before Running (the original config travels in the config write,
  as the ConfigMap's start record, ``core/startrecord``), then Running, applied and verified; a later start (a
  new challenger): exactly the intent (Progressing, nothing applied yet), then Running. Nothing in between; the
  later start's write drops the record.
- Rollout held: the applied delivery shows in status while the experiment is still Progressing, written by the
  first safety-net poll (``ROLLOUT_POLL_SECONDS``) once it has waited ``DEFER_LIMIT_SECONDS``, not before and
  not much after.
- The spec edited back while the status waits (a new challenger, then the old one again, ``onDrift: Stop``): the
  experiment goes on to Running with the spec's challenger; the operator's own write is never taken for drift.
- The operator killed while the first start's status waits in memory (nothing in status): the next one adopts the
  written config (one config write, one roll), takes the original config from the start record (not from the
  keys the dead operator's write changed) and the spec's test; it reaches Running.
- The experiment deleted while the first start's status waits: the original config is restored from the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client import ApiClient

from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.core import lifecycle
from canopy_operator.core.startrecord import ANNOTATION as RECORD
from canopy_operator.core.status import DEFER_LIMIT_SECONDS, ROLLOUT_POLL_SECONDS
from tests.support.faults import (
    CHALLENGER,
    KEY,
    SturdyKubelet,
    WriteLog,
    backend_scene,
    create_experiment,
    experiment,
    get_exp,
    phase_is,
    status_of,
)
from tests.support.kopf_runner import wait_for
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

OTHER = "Summarize it for a ten-year-old:\n"


class HeldKubelet(SturdyKubelet):
    """Restarts the backend on a new pod template at once, but reports the rollout done only once released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()
        self.held = 0
        """Rollouts that waited for the release."""

    async def _report_rollout(self) -> None:
        if self.rollouts:  # a rollout (not the first start): hold it
            self.held += 1
            await self.release.wait()
        await super()._report_rollout()


@contextlib.asynccontextmanager
async def held_scene(api: ApiClient, namespace: str, workdir: Path) -> AsyncIterator[HeldKubelet]:
    async with backend_scene(api, namespace, workdir, HeldKubelet) as kubelet:
        assert isinstance(kubelet, HeldKubelet)
        try:
            yield kubelet
        finally:
            kubelet.release.set()


class StatusLog:
    """Every status the API server stored for ``exp``, in order, seen through a watch (polling could miss one)."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.statuses: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatusLog:
        self._task = asyncio.create_task(self._watch())
        await asyncio.sleep(0.5)  # the watch is open before the operator starts
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _watch(self) -> None:
        async with watch.Watch() as w:
            stream = w.stream(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, timeout_seconds=200
            )
            async for event in stream:
                status = event["object"].get("status") or {}
                if status and (not self.statuses or status != self.statuses[-1]):
                    self.statuses.append(status)


def applied(status: dict[str, Any]) -> bool:
    return bool((status.get("delivery") or {}).get("appliedAt"))


async def configmap_written(api: ApiClient, namespace: str) -> bool:
    cm = await client.CoreV1Api(api).read_namespaced_config_map("canopy-config", namespace)
    return "prompt_b" in (cm.data or {}).get(KEY, "")


@contextlib.asynccontextmanager
async def config_written(
    api: ApiClient, namespace: str, kubelet: HeldKubelet, kubeconfig: Path, workdir: Path
) -> AsyncIterator[OperatorProcess]:
    """The experiment created and the operator started, once the operator has written the start's config; the
    operator is stopped (SIGTERM) on the way out: its exit status is ``returncode()``."""
    await create_experiment(api, namespace, experiment(kubelet.url))
    proc = OperatorProcess(kubeconfig, namespace, workdir / "operator")
    proc.start()
    try:
        await wait_for(lambda: configmap_written(api, namespace), timeout=90, what="the config written")
        yield proc
    finally:
        proc.stop()


async def test_a_first_start_stores_running_only_a_later_start_its_intent_then_running(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    custom = client.CustomObjectsApi(admin_api)
    async with (
        held_scene(admin_api, namespace, tmp_path) as kubelet,
        StatusLog(admin_api, namespace) as log,
        config_written(admin_api, namespace, kubelet, operator_kubeconfig, tmp_path) as proc,
    ):
        await asyncio.sleep(2.0)  # the start's pass is over; the next comes when the rollout finishes
        waiting = await status_of(admin_api, namespace)
        record = await start_record(admin_api, namespace)
        kubelet.release.set()
        await wait_for(phase_is(admin_api, namespace, "Running"), timeout=60, what="phase Running")
        first = list(log.statuses)
        uid = (await get_exp(admin_api, namespace))["metadata"]["uid"]
        kubelet.release.clear()
        patch = {"spec": {"challenger": {"prompt": OTHER}}}
        await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]  # a documented **kwargs option
            GROUP, VERSION, namespace, PLURAL, "exp", patch, _content_type="application/merge-patch+json"
        )
        await wait_for(lambda: configmap_has(admin_api, namespace, OTHER), timeout=60, what="the new challenger")
        await asyncio.sleep(2.0)
        again = await status_of(admin_api, namespace)
        kubelet.release.set()

        async def running_the_new_test() -> bool:
            status = await status_of(admin_api, namespace)
            return bool(status.get("phase") == "Running" and status["test"]["id"] != waiting_id(first))

        await wait_for(running_the_new_test, timeout=60, what="the new test Running")
        later = log.statuses[len(first) :]
        record_after = await start_record(admin_api, namespace)
    assert proc.returncode() == 0, proc.tail()
    assert kubelet.held == 2
    assert waiting == {}, f"a first start stores nothing before Running: {waiting}"
    assert record is not None, "the first config write carries the start record"
    recorded = json.loads(record)
    assert (recorded["v"], recorded["experiment"]) == (1, uid), recorded
    assert {k: v for k, v in recorded["original"].items() if v is not None} == first[-1]["original"], recorded
    assert [(s.get("phase"), applied(s), verified(s)) for s in first] == [("Running", True, True)], first
    assert again["phase"] == "Progressing", again  # the later start's intent (the previous delivery as it was)
    assert again["test"]["id"] != waiting_id(first), again
    phases = [s.get("phase") for s in later]
    assert phases == ["Progressing", "Running"], phases
    assert record_after is None, "a later write drops the start record"


def waiting_id(statuses: list[dict[str, Any]]) -> str:
    return str(statuses[-1]["test"]["id"])


def verified(status: dict[str, Any]) -> bool:
    return bool((status.get("delivery") or {}).get("verifiedAt"))


async def start_record(api: ApiClient, namespace: str) -> str | None:
    cm = await client.CoreV1Api(api).read_namespaced_config_map("canopy-config", namespace)
    record: str | None = (cm.metadata.annotations or {}).get(RECORD)
    return record


async def configmap_has(api: ApiClient, namespace: str, prompt: str) -> bool:
    cm = await client.CoreV1Api(api).read_namespaced_config_map("canopy-config", namespace)
    return prompt.strip() in (cm.data or {}).get(KEY, "")


async def test_a_rollout_held_past_the_bound_shows_the_applied_delivery(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    async def shown() -> bool:
        return applied(await status_of(admin_api, namespace))

    async with (
        held_scene(admin_api, namespace, tmp_path) as kubelet,
        config_written(admin_api, namespace, kubelet, operator_kubeconfig, tmp_path) as proc,
    ):
        written = time.monotonic()
        bound = DEFER_LIMIT_SECONDS + ROLLOUT_POLL_SECONDS
        await wait_for(shown, timeout=bound + 15, what="the applied delivery in status")
        after = time.monotonic() - written
        status = await status_of(admin_api, namespace)
        kubelet.release.set()
        await wait_for(phase_is(admin_api, namespace, "Running"), timeout=60, what="phase Running")
    assert proc.returncode() == 0, proc.tail()
    assert status["phase"] == "Progressing", status
    assert after >= DEFER_LIMIT_SECONDS - 1.5, f"shown after {after:.1f}s: the status did not wait its bound"
    assert after <= bound * 1.05 + 3.0, f"shown after {after:.1f}s: kept past the first poll after its bound"


async def test_killed_while_the_status_waits_the_next_operator_adopts_the_write(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    async with held_scene(admin_api, namespace, tmp_path) as kubelet:
        texts, rolls = WriteLog.configmap(admin_api, namespace), WriteLog.deployment(admin_api, namespace)
        await texts.start()
        await rolls.start()
        before = await configmap_text_now(admin_api, namespace)
        await create_experiment(admin_api, namespace, experiment(kubelet.url))
        first = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator")
        first.start()
        try:
            await wait_for(lambda: configmap_written(admin_api, namespace), timeout=90, what="the config written")
            await asyncio.sleep(1.5)
            stored = await status_of(admin_api, namespace)
        finally:
            assert first.process is not None
            first.process.kill()
            first.process.wait()
        second = first.again()
        second.start()
        try:
            kubelet.release.set()
            await wait_for(phase_is(admin_api, namespace, "Running"), timeout=90, what="phase Running")
            final = await status_of(admin_api, namespace)
            spec_test = await spec_test_id(admin_api, namespace)
            await client.CustomObjectsApi(admin_api).delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "exp"
            )
            await wait_for(lambda: gone(admin_api, namespace), timeout=60, what="the experiment deleted")
            restored = await configmap_text_now(admin_api, namespace)
        finally:
            code = second.stop()
            await texts.stop()
            await rolls.stop()
    assert code == 0, second.tail()
    assert stored == {}, "killed before anything was stored in status"
    assert texts.changes == 2, texts.values  # the start's write, and the restore at deletion
    assert rolls.changes == 2, rolls.values
    assert final["test"]["id"] == spec_test
    # from the record, not from the keys the dead operator's write changed (both flags on, the challenger as B)
    assert final["original"]["feedbackEnabled"] is False, final["original"]
    assert final["original"]["abTestingEnabled"] is False, final["original"]
    assert "promptB" not in final["original"], final["original"]
    assert applied(final)
    assert final["delivery"]["verifiedAt"]
    assert restored == before, "deleted, the original config is back"


async def test_deleted_while_the_first_status_waits_the_record_restores_the_original(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    async with held_scene(admin_api, namespace, tmp_path) as kubelet:
        before = await configmap_text_now(admin_api, namespace)
        async with config_written(admin_api, namespace, kubelet, operator_kubeconfig, tmp_path) as proc:
            await asyncio.sleep(1.5)
            stored = await status_of(admin_api, namespace)
            await client.CustomObjectsApi(admin_api).delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "exp"
            )
            await wait_for(lambda: gone(admin_api, namespace), timeout=60, what="the experiment deleted")
            restored = await configmap_text_now(admin_api, namespace)
            record = await start_record(admin_api, namespace)
    assert proc.returncode() == 0, proc.tail()
    assert stored == {}, stored
    assert restored == before
    assert record is None, "the restore's write drops the record"


async def configmap_text_now(api: ApiClient, namespace: str) -> str:
    cm = await client.CoreV1Api(api).read_namespaced_config_map("canopy-config", namespace)
    return str((cm.data or {})[KEY])


async def spec_test_id(api: ApiClient, namespace: str) -> str:
    spec = PromptExperimentSpec.model_validate((await get_exp(api, namespace))["spec"])
    return lifecycle.test_key(spec)


async def gone(api: ApiClient, namespace: str) -> bool:
    try:
        await get_exp(api, namespace)
    except client.ApiException as exc:
        return exc.status == 404
    return False


async def test_a_spec_edited_back_while_the_status_waits_is_not_taken_for_drift(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """Running with challenger X; the spec changes to Y (a new test: intent, Y written, the rest waiting while the
    rollout is held), then back to X. The pass after the edit starts from the waiting status, which says Y was
    written; from the intent alone (the previous, verified X) it would take Y for drift, and with onDrift Stop
    the experiment would stay Degraded."""
    async with held_scene(admin_api, namespace, tmp_path) as kubelet:
        kubelet.release.set()
        body = experiment(kubelet.url, delivery={"verifyTimeout": "60s", "onDrift": "Stop"})
        await create_experiment(admin_api, namespace, body)
        proc = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator")
        proc.start()
        custom = client.CustomObjectsApi(admin_api)

        async def challenger(prompt: str) -> None:
            patch = {"spec": {"challenger": {"prompt": prompt}}}
            await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]  # a documented **kwargs option
                GROUP, VERSION, namespace, PLURAL, "exp", patch, _content_type="application/merge-patch+json"
            )

        async def written(prompt: str) -> bool:
            cm = await client.CoreV1Api(admin_api).read_namespaced_config_map("canopy-config", namespace)
            return prompt.strip() in (cm.data or {}).get(KEY, "")

        try:
            await wait_for(phase_is(admin_api, namespace, "Running"), timeout=90, what="phase Running")
            first = (await status_of(admin_api, namespace))["test"]["id"]
            kubelet.release.clear()
            await challenger(OTHER)
            await wait_for(lambda: written(OTHER), timeout=60, what="the new challenger written")
            waiting = await status_of(admin_api, namespace)
            await challenger(CHALLENGER)
            await asyncio.sleep(3.0)  # the pass the edit wakes runs while the rollout is still held
            during = await status_of(admin_api, namespace)
            kubelet.release.set()

            last: list[dict[str, Any]] = [{}]

            async def running_again() -> bool:
                last[0] = await status_of(admin_api, namespace)
                return bool(last[0].get("phase") == "Running" and last[0]["test"]["id"] != waiting["test"]["id"])

            try:
                await wait_for(running_again, timeout=90, what="Running with the spec's challenger")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; status: {last[0]}; log: {proc.tail(30)}") from None
            final = await status_of(admin_api, namespace)
        finally:
            code = proc.stop()
    assert code == 0, proc.tail()
    assert waiting["phase"] == "Progressing", waiting  # the new test's intent; its delivery waited in memory
    assert waiting["test"]["id"] != first
    assert during.get("phase") != "Degraded", during.get("conditions")
    assert final["phase"] == "Running"
    drift = {c["type"]: c for c in final["conditions"]}["ConfigDrift"]
    assert drift["status"] == "False", drift
    assert await written(CHALLENGER)
