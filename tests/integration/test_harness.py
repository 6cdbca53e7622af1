"""The envtest harness itself: a real API server with the CRD, RBAC, kubectl and an in-process operator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi

from canopy_devkit.controlplane import AssetPaths, ControlPlane
from canopy_operator.api import GROUP, PLURAL, VERSION
from tests.support import minimal_operator
from tests.support.envtest import SAMPLES_DIR, USER_ROLES_PATH, Kubectl
from tests.support.kopf_runner import run_operator, wait_for

pytestmark = pytest.mark.integration

MINIMAL: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "PromptExperiment",
    "metadata": {"name": "minimal"},
    "spec": {"challenger": {"prompt": "Provide a brief, concise summary:"}},
}


def _samples() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(SAMPLES_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d and d.get("kind") == "PromptExperiment")
    return docs or [MINIMAL]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(proc.name))
    return found


def test_api_server_serves_crd_and_accepts_samples(kubectl: Kubectl, namespace: str) -> None:
    served = kubectl("api-resources", f"--api-group={GROUP}", "-o", "name").stdout.split()
    assert f"{PLURAL}.{GROUP}" in served

    samples = _samples()
    kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(samples))
    names = kubectl("get", "pexp", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert sorted(names) == sorted(s["metadata"]["name"] for s in samples)


async def test_operator_status_write_visible_to_kubectl_as_operator_user(
    admin_api: ApiClient, control_plane: ControlPlane, operator_kubeconfig: Path, kubectl: Kubectl, namespace: str
) -> None:
    # Least privilege: the operator's own user may not create experiments; an author bound to the shipped
    # editor role (aggregated into `edit`) creates it, the operator writes status under its shipped ClusterRole.
    kubectl("apply", "-f", str(USER_ROLES_PATH))
    editor = "canopy-operator-promptexperiment-editor"
    kubectl("create", "rolebinding", "author", f"--clusterrole={editor}", "--user=alice", "-n", namespace)
    author = control_plane.user_kubeconfig("alice", ["system:authenticated"])
    can_create = ("auth", "can-i", "create", PLURAL, "-n", namespace)
    assert kubectl(*can_create, kubeconfig=operator_kubeconfig, check=False).stdout.strip() == "no"
    assert kubectl(*can_create, kubeconfig=author, check=False).stdout.strip() == "yes"

    def phase_as(kubeconfig: Path) -> str:
        # The operator's ClusterRole grants list but not get on promptexperiments: read via a list.
        out = kubectl(
            "get",
            "pexp",
            "-n",
            namespace,
            "-o",
            "jsonpath={range .items[*]}{.status.phase}/{.status.observedGeneration}{end}",
            kubeconfig=kubeconfig,
        )
        return out.stdout

    with run_operator(operator_kubeconfig, namespace=namespace, module=None, registry=minimal_operator.registry):
        kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(MINIMAL), kubeconfig=author)
        await wait_for(lambda: phase_as(operator_kubeconfig) == "Pending/1", timeout=30, what="status.phase Pending")
    assert phase_as(author) == "Pending/1"

    obj = await CustomObjectsApi(admin_api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "minimal")
    annotations = obj["metadata"].get("annotations", {})
    assert f"{GROUP}/last-handled-configuration" in annotations
    assert not [a for a in annotations if a.startswith("kopf.zalando.org")]


def test_invalid_experiment_rejected_naming_the_field(kubectl: Kubectl, namespace: str) -> None:
    bad = {**MINIMAL, "spec": {**MINIMAL["spec"], "analysis": {"alpha": 0.9}}}
    result = kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0
    assert "spec.analysis.alpha" in result.stderr


async def test_operator_user_cannot_delete_namespace(operator_api: ApiClient, namespace: str) -> None:
    with pytest.raises(ApiException) as caught:
        await CoreV1Api(operator_api).delete_namespace(namespace)
    assert caught.value.status == 403


def test_stop_leaves_no_process_and_no_temp_dir(envtest_assets: AssetPaths) -> None:
    plane = ControlPlane(assets=envtest_assets)
    plane.start()
    try:
        pids = plane.pids
        tmp_dir = plane.tmp_dir
        assert set(pids) == {"etcd", "kube-apiserver"}
        assert all(_alive(pid) for pid in pids.values())
    finally:
        plane.stop()
    assert [pid for pid in pids.values() if _alive(pid)] == []
    assert _processes_mentioning(str(tmp_dir)) == []
    assert not tmp_dir.exists()


def test_restart_apiserver_keeps_objects_and_address(envtest_assets: AssetPaths) -> None:
    with ControlPlane(crd_paths=[], assets=envtest_assets) as plane:
        server = plane.server_url
        old_pid = plane.pids["kube-apiserver"]
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept", "namespace": "default"}}
        with plane.admin_client() as client:
            client.create_or_replace({**body, "data": {"k": "v"}}, "configmaps")

        plane.restart_apiserver()

        assert plane.server_url == server
        assert plane.pids["kube-apiserver"] != old_pid
        assert not _alive(old_pid)
        with plane.admin_client() as client:
            assert client.get_json("/api/v1/namespaces/default/configmaps/kept")["data"] == {"k": "v"}
