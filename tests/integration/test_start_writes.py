"""What a new experiment costs the API server, and which concurrent writes make a pass start over (issue #20).

The operator process is paused right before its first status write of a new experiment (``before-status-write``
hit 1 is the intent write; the config write comes next: the ConfigMap is tracked by Argo CD here, so the first
write carries no start record and the intent goes to status first, as for every later start). Meanwhile the
test writes the object:

- a label (metadata only, as Kopf's finalizer patch or a human's label would): the pass's next status write
  retries on the fresh resourceVersion and the pass goes on to the ConfigMap. Before, any write made the pass
  start over from its reads (16 conflicts per experiment in the benchmark's burst of 100 on a slow machine);
- the spec (a new generation): the pass still starts over, on the fresh object, so the edit is never lost.

Which of ``before-configmap-write`` (hit 1) and ``before-status-write`` (hit 2) the operator reaches first tells
the two apart: a redone pass writes its intent again before any ConfigMap write.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_operator.api.base import GROUP, PLURAL, VERSION
from tests.support.faults import backend_scene, create_experiment, experiment, get_exp, phase_is, status_of
from tests.support.kopf_runner import wait_for
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MERGE = "application/merge-patch+json"
FIRST_WRITE = "before-status-write.1"
SECOND_WRITE = "before-status-write.2"
CONFIG_WRITE = "before-configmap-write.1"


async def patch_exp(api: ApiClient, namespace: str, patch: dict[str, object]) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(  # type: ignore[call-arg]  # a documented **kwargs option
        GROUP, VERSION, namespace, PLURAL, "exp", patch, _content_type=MERGE
    )


@pytest.mark.parametrize(
    ("edit", "reached_first"),
    [
        ({"metadata": {"labels": {"team": "search"}}}, CONFIG_WRITE),
        ({"spec": {"analysis": {"duplicateVoteCap": 4}}}, SECOND_WRITE),
    ],
    ids=["metadata-only-write-is-retried-in-place", "spec-edit-starts-the-pass-over"],
)
async def test_a_concurrent_write_redoes_the_pass_only_when_the_spec_or_status_moved(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    edit: dict[str, object],
    reached_first: str,
) -> None:
    async with backend_scene(admin_api, namespace, tmp_path) as kubelet:
        tracked = {
            "metadata": {"annotations": {"argocd.argoproj.io/tracking-id": "canopy:/ConfigMap:ns/canopy-config"}}
        }
        await client.CoreV1Api(admin_api).patch_namespaced_config_map("canopy-config", namespace, tracked)
        await create_experiment(admin_api, namespace, experiment(kubelet.url))
        points = "before-status-write:1=pause,before-status-write:2=pause,before-configmap-write:1=pause"
        proc = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator", failpoints=points)
        proc.start()
        try:
            pauses = proc.log_dir
            await wait_for((pauses / FIRST_WRITE).exists, timeout=90, what="the operator paused at its first write")
            await patch_exp(admin_api, namespace, edit)
            (pauses / FIRST_WRITE).unlink()

            def paused_again() -> bool:
                return (pauses / CONFIG_WRITE).exists() or (pauses / SECOND_WRITE).exists()

            await wait_for(paused_again, timeout=60, what="the operator's next pause")
            await asyncio.sleep(0.5)  # a paused process cannot reach the other point meanwhile; this shows it
            assert [p.name for p in (pauses / CONFIG_WRITE, pauses / SECOND_WRITE) if p.exists()] == [reached_first]
            for marker in (CONFIG_WRITE, SECOND_WRITE):  # let it run on (the other pause, if hit, is released too)
                (pauses / marker).unlink(missing_ok=True)

            async def running_without_pauses() -> bool:
                for marker in (CONFIG_WRITE, SECOND_WRITE):
                    (pauses / marker).unlink(missing_ok=True)
                return bool(await phase_is(admin_api, namespace, "Running")())

            await wait_for(running_without_pauses, timeout=90, what="phase Running")
            obj = await get_exp(admin_api, namespace)
            status = await status_of(admin_api, namespace)
        finally:
            code = proc.stop()
    assert code == 0, proc.tail()
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["metadata"].get("labels", {}).get("team") == ("search" if reached_first == CONFIG_WRITE else None)
    # Kopf keeps no last-handled configuration in the object (nothing diffs against it).
    assert f"{GROUP}/last-handled-configuration" not in (obj["metadata"].get("annotations") or {})


async def test_a_spec_edit_wakes_an_idle_daemon_at_once(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """The daemon sleeps a whole interval (here an hour) between passes; a new generation wakes it."""
    async with backend_scene(admin_api, namespace, tmp_path) as kubelet:
        body = experiment(kubelet.url)
        body["spec"]["analysis"]["interval"] = "1h"
        await create_experiment(admin_api, namespace, body)
        proc = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator")
        proc.start()
        try:
            await wait_for(phase_is(admin_api, namespace, "Running"), timeout=90, what="phase Running")
            await patch_exp(admin_api, namespace, {"metadata": {"labels": {"team": "search"}}})
            await asyncio.sleep(3.0)
            unchanged = await status_of(admin_api, namespace)
            await patch_exp(admin_api, namespace, {"spec": {"analysis": {"duplicateVoteCap": 4}}})
            generation = (await get_exp(admin_api, namespace))["metadata"]["generation"]

            async def observed() -> bool:
                return bool((await status_of(admin_api, namespace)).get("observedGeneration") == generation)

            await wait_for(observed, timeout=20, what="the new generation observed within seconds, not an hour")
        finally:
            code = proc.stop()
    assert code == 0, proc.tail()
    assert unchanged["observedGeneration"] == generation - 1  # a label is no reason to wake
