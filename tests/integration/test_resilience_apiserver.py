"""API server faults: a conflicting writer on every write path, and the API server restarted under the operator.

Conflicts are made deterministic with pause failpoints: the operator process stops right before a write
(after it read what it is about to overwrite), the test writes the same object as a human or a controller
would, then lets the operator go on. No update may be lost, no write doubled, no vote lost or doubled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import new_client_from_config

from canopy_devkit.controlplane import AssetPaths, ControlPlane
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from tests.support.envtest import namespace_name
from tests.support.faults import (
    CHALLENGER,
    KEY,
    WriteLog,
    backend_scene,
    counted,
    create_experiment,
    experiment,
    phase_is,
    status_of,
    vote,
)
from tests.support.kopf_runner import wait_for
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

VOTES = (25, 5, 2)
HUMAN_URL = "http://llama-stack.elsewhere.svc.cluster.local:8321"


def interference(api: ApiClient, namespace: str) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    """(failpoint, the concurrent write made while the operator is paused there), in the order they are hit."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

    async def edit_spec() -> None:  # someone edits the spec (not a test parameter) after the operator read it
        patch = {"spec": {"analysis": {"duplicateVoteCap": 4}}}
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(  # type: ignore[call-arg]  # a documented **kwargs option
            GROUP, VERSION, namespace, PLURAL, "exp", patch, _content_type="application/merge-patch+json"
        )

    async def edit_values() -> None:  # a human changes an unmanaged key of the same values text
        cm = await core.read_namespaced_config_map("canopy-config", namespace)
        text = cm.data[KEY]
        values = yaml.safe_load(text)
        edited = text.replace(values["LLAMA_STACK_URL"], HUMAN_URL)
        await core.patch_namespaced_config_map("canopy-config", namespace, {"data": {KEY: edited}})

    async def edit_deployment() -> None:  # another controller annotates the Deployment
        patch = {"metadata": {"annotations": {"example.com/owner": "team-a"}}}
        await apps.patch_namespaced_deployment("canopy-backend", namespace, patch)

    # A first start writes no status before its ConfigMap write (the start record travels in it): its first status
    # write is the one that records Running, after the roll.
    return [
        ("before-configmap-write", edit_values),
        ("before-roll", edit_deployment),
        ("before-status-write", edit_spec),
    ]


async def promoted_story(api: ApiClient, namespace: str, proc: OperatorProcess, url: str) -> dict[str, Any]:
    await wait_for(phase_is(api, namespace, "Running"), timeout=90, what="phase Running")
    await vote(url, *VOTES)
    await wait_for(phase_is(api, namespace, "Concluded"), timeout=120, what="phase Concluded")
    await asyncio.sleep(1.0)  # room for a duplicate write to show in the watches
    assert proc.returncode() is None, proc.tail()
    return await status_of(api, namespace)


async def test_conflicting_writes_on_every_write_path_lose_no_update(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    steps = interference(admin_api, namespace)
    async with backend_scene(admin_api, namespace, tmp_path) as kubelet:
        cm_log, dep_log = WriteLog.configmap(admin_api, namespace), WriteLog.deployment(admin_api, namespace)
        await cm_log.start()
        await dep_log.start()
        await create_experiment(admin_api, namespace, experiment(kubelet.url, min_votes=30))
        pauses = ",".join(f"{point}:1=pause" for point, _ in steps)
        proc = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator", failpoints=pauses)
        proc.start()
        try:
            for point, write in steps:
                marker = proc.log_dir / f"{point}.1"
                await wait_for(marker.exists, timeout=90, what=f"the operator paused at {point}")
                await write()
                marker.unlink()
            status = await promoted_story(admin_api, namespace, proc, kubelet.url)
        finally:
            code = proc.stop()
            await cm_log.stop()
            await dep_log.stop()
    assert code == 0, proc.tail()
    assert counted(status) == VOTES
    assert [p["outcome"] for p in status["promotions"]] == ["challenger"]
    exp = await client.CustomObjectsApi(admin_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "exp"
    )
    assert exp["spec"]["analysis"]["duplicateVoteCap"] == 4
    assert status["observedGeneration"] == exp["metadata"]["generation"]
    # ConfigMap: the human's edit, then the operator's two writes, each on top of the latest text.
    assert cm_log.changes == 3, cm_log.changes
    final = cm_log.values[-1]
    assert final is not None
    values = yaml.safe_load(final)
    assert values["LLAMA_STACK_URL"] == HUMAN_URL
    assert values["summarize"]["prompt"] == CHALLENGER
    dep = await client.AppsV1Api(admin_api).read_namespaced_deployment("canopy-backend", namespace)
    assert dep.metadata.annotations["example.com/owner"] == "team-a"
    assert dep_log.changes == 2
    assert kubelet.rollouts == 2


async def test_apiserver_restart_under_the_operator_loses_nothing(envtest_assets: AssetPaths, tmp_path: Path) -> None:
    with ControlPlane(assets=envtest_assets) as plane:
        kubeconfig = plane.admin_kubeconfig()
        namespace = namespace_name("apiserver-restart")
        with plane.admin_client() as admin:
            admin.create_or_replace(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, "namespaces"
            )
        api = await new_client_from_config(config_file=str(kubeconfig))
        try:
            async with backend_scene(api, namespace, tmp_path) as kubelet:
                cm_log, dep_log = WriteLog.configmap(api, namespace), WriteLog.deployment(api, namespace)
                await cm_log.start()
                await dep_log.start()
                await create_experiment(api, namespace, experiment(kubelet.url, min_votes=30))
                proc = OperatorProcess(kubeconfig, namespace, tmp_path / "operator")
                proc.start()
                try:
                    await wait_for(phase_is(api, namespace, "Running"), timeout=90, what="phase Running")
                    await plane_restart(plane)  # once while the test runs
                    await vote(kubelet.url, *VOTES)
                    await asyncio.sleep(4.0)  # the next poll decides: restart around the decision and promotion
                    await plane_restart(plane)
                    await wait_for(phase_is(api, namespace, "Concluded"), timeout=120, what="phase Concluded")
                    await asyncio.sleep(1.0)
                    status = await status_of(api, namespace)
                    assert proc.returncode() is None, proc.tail()
                finally:
                    code = proc.stop()
                    await cm_log.stop()
                    await dep_log.stop()
        finally:
            await api.close()
    assert code == 0, proc.tail()
    assert counted(status) == VOTES
    assert [p["outcome"] for p in status["promotions"]] == ["challenger"]
    assert cm_log.changes == 2, cm_log.values
    assert dep_log.changes == 2
    assert kubelet.rollouts == 2


async def plane_restart(plane: ControlPlane) -> None:
    """Restart kube-apiserver (blocking in the harness) without stopping this event loop."""
    await asyncio.to_thread(plane.restart_apiserver)
