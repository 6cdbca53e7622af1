"""The shipped RBAC is enough, and only just: a whole experiment runs as the operator's ServiceAccount.

Two installs are proven: the cluster-wide one (``manifests/rbac/clusterrole.yaml``, fixture
``operator_kubeconfig``) and the single-namespace one (``manifests/rbac/role.yaml`` with its RoleBinding
applied in one namespace, the operator run with ``--namespace``), each from create to promotion.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane import ControlPlane
from canopy_devkit.kubelet import FakeKubelet, running_backend
from canopy_devkit.voters import fixed_picks, post_votes
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from tests.support.envtest import REPO_ROOT, Kubectl
from tests.support.kopf_runner import run_operator, wait_for

pytestmark = pytest.mark.integration

RBAC = REPO_ROOT / "manifests" / "rbac"
CHALLENGER = "Provide a brief, concise summary:\n"


@pytest.fixture
def short_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A namespace with a short name: a ServiceAccount user name must fit a certificate's 64-character CN."""
    name = f"rbac-{secrets.token_hex(3)}"
    with control_plane.admin_client() as rest:
        rest.create_or_replace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, "namespaces")
    yield name
    with control_plane.admin_client() as rest:
        rest.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    async with running_backend(admin_api, namespace, tmp_path) as kubelet:
        yield kubelet


def namespaced_install(namespace: str) -> str:
    """The generated ServiceAccount, Role and RoleBinding, moved to ``namespace`` as kustomize would."""
    docs: list[dict[str, Any]] = []
    for name in ("serviceaccount.yaml", "role.yaml", "rolebinding.yaml"):
        docs += [d for d in yaml.safe_load_all((RBAC / name).read_text(encoding="utf-8")) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding", "ServiceAccount"]
    return yaml.safe_dump_all(docs, sort_keys=False)


def experiment(url: str) -> dict[str, Any]:
    spec = {
        "backend": {"url": url},
        "challenger": {"prompt": CHALLENGER},
        "analysis": {"interval": "5s"},
        "delivery": {"verifyTimeout": "30s"},
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": "exp"}, "spec": spec}


async def status_of(api: ApiClient, namespace: str) -> dict[str, Any]:
    obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "exp")
    status: dict[str, Any] = obj.get("status") or {}
    return status


async def create_run_and_promote(admin_api: ApiClient, kubeconfig: Path, namespace: str, url: str) -> dict[str, Any]:
    await client.CustomObjectsApi(admin_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, experiment(url)
    )

    async def phase_is(phase: str) -> bool:
        return (await status_of(admin_api, namespace)).get("phase") == phase

    with run_operator(kubeconfig, namespace=namespace):
        await wait_for(lambda: phase_is("Running"), timeout=60, what="phase Running")
        await post_votes(url, fixed_picks(challenger=25, champion=5, ties=0), seed=11)
        await wait_for(lambda: phase_is("Concluded"), timeout=90, what="phase Concluded")
    return await status_of(admin_api, namespace)


def can_i(kubectl: Kubectl, kubeconfig: Path, *args: str) -> bool:
    result = kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    return result.stdout.strip() == "yes"


async def test_full_experiment_promotes_with_only_the_shipped_clusterrole(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, kubectl: Kubectl
) -> None:
    assert not can_i(kubectl, operator_kubeconfig, "delete", "configmaps", "-n", namespace)
    assert not can_i(kubectl, operator_kubeconfig, "create", "deployments", "-n", namespace)

    status = await create_run_and_promote(admin_api, operator_kubeconfig, namespace, backend.url)

    assert status["winner"] == "challenger"
    assert status["promotions"][0]["outcome"] == "challenger"
    assert backend.rollouts == 2
    kinds = {c["type"]: c["status"] for c in status["conditions"]}
    assert kinds["Promoted"] == "True"
    assert kinds["Degraded"] == "False"


async def test_full_experiment_promotes_with_only_the_namespaced_role(
    admin_api: ApiClient, control_plane: ControlPlane, short_namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    namespace = short_namespace
    kubectl("apply", "-n", namespace, "-f", "-", input=namespaced_install(namespace))
    account = f"system:serviceaccount:{namespace}:canopy-operator"
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated")
    kubeconfig = control_plane.user_kubeconfig(account, groups)
    assert can_i(kubectl, kubeconfig, "patch", "configmaps", "-n", namespace)
    assert not can_i(kubectl, kubeconfig, "patch", "configmaps", "-n", "default")
    assert not can_i(kubectl, kubeconfig, "list", "promptexperiments.canopy.genaiops.io", "--all-namespaces")

    async with running_backend(admin_api, namespace, tmp_path) as backend:
        status = await create_run_and_promote(admin_api, kubeconfig, namespace, backend.url)

    assert status["winner"] == "challenger"
    assert status["votes"]["challengerWins"] == 25
    assert backend.rollouts == 2
    kinds = {c["type"]: c["status"] for c in status["conditions"]}
    assert kinds["Promoted"] == "True"
