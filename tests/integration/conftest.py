"""Fixtures of the integration tests: one real kube-apiserver + etcd per session (envtest for Python).

Fixtures (all need the control plane; missing binaries skip locally and fail under CI=true):

- ``envtest_assets`` (session): the kube-apiserver and etcd paths (for tests that start their own).
- ``control_plane`` (session): the running :class:`ControlPlane`.
- ``admin_kubeconfig`` (session): user ``admin`` in ``system:masters``.
- ``operator_rbac`` (session): the shipped ``manifests/rbac/clusterrole.yaml`` applied and bound to
  ServiceAccount ``canopy-system/canopy-operator``; the ClusterRole names.
- ``operator_kubeconfig`` (session): the operator's ServiceAccount user, RBAC applied.
- ``kubectl`` (session): ``kubectl(*args, kubeconfig=None, input=None, check=True)`` (admin by default).
- ``namespace`` (function): a fresh namespace, deleted afterwards (it stays Terminating; not awaited).
- ``admin_api`` / ``operator_api`` (function): ``kubernetes_asyncio`` ApiClients, closed at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import new_client_from_config

from canopy_devkit.controlplane import AssetPaths, AssetsMissing, ControlPlane, find_assets
from tests.support.envtest import (
    CLUSTERROLE_PATH,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    Kubectl,
    cluster_role_names,
    namespace_name,
    operator_binding_manifest,
    running_in_ci,
)
from tests.support.mlflow_server import MlflowServer
from tests.support.phoenix_server import PhoenixServer
from tests.support.server_process import ServerUnavailable


@pytest.fixture(scope="session")
def envtest_assets() -> AssetPaths:
    try:
        return find_assets()
    except AssetsMissing as e:
        if running_in_ci():
            pytest.fail(f"integration tests need the envtest binaries under CI: {e}", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def control_plane(envtest_assets: AssetPaths) -> Iterator[ControlPlane]:
    with ControlPlane(assets=envtest_assets) as plane:
        yield plane


@pytest.fixture(scope="session")
def admin_kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.admin_kubeconfig()


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane.admin_kubeconfig(), control_plane.tmp_dir / "kubectl-cache")


@pytest.fixture(scope="session")
def operator_rbac(kubectl: Kubectl) -> list[str]:
    """Apply the project's shipped ClusterRole and bind it to the operator's ServiceAccount."""
    assert CLUSTERROLE_PATH.is_file(), f"{CLUSTERROLE_PATH} is missing: run `make manifests`"
    roles = cluster_role_names()
    assert roles, f"{CLUSTERROLE_PATH} holds no ClusterRole"
    kubectl("create", "namespace", OPERATOR_NAMESPACE)
    kubectl("create", "serviceaccount", OPERATOR_SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE)
    kubectl("apply", "-f", str(CLUSTERROLE_PATH))
    kubectl("apply", "-f", "-", input=operator_binding_manifest(roles))
    return roles


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane, operator_rbac: list[str]) -> Path:
    return control_plane.operator_kubeconfig()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    name = namespace_name(request.node.name)
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    with control_plane.admin_client() as client:
        client.create_or_replace(body, "namespaces")
    yield name
    with control_plane.admin_client() as client:
        client.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
async def admin_api(admin_kubeconfig: Path) -> AsyncIterator[ApiClient]:
    api = await new_client_from_config(config_file=str(admin_kubeconfig))
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
async def operator_api(operator_kubeconfig: Path) -> AsyncIterator[ApiClient]:
    api = await new_client_from_config(config_file=str(operator_kubeconfig))
    try:
        yield api
    finally:
        await api.close()


# ---- real MLflow and Phoenix servers (tests/support/mlflow_server.py, phoenix_server.py) ------------------
# One of each per session, started on first use (about 8 s and 15 s); every test seeds its own experiment,
# prompt or project, so tests do not see each other's votes.


def _unavailable(what: str, error: ServerUnavailable) -> None:
    message = f"{what} could not start: {error}"
    if running_in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    server = MlflowServer()
    try:
        server.__enter__()
    except ServerUnavailable as e:
        _unavailable("the MLflow server", e)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def phoenix_server() -> Iterator[PhoenixServer]:
    server = PhoenixServer()
    try:
        server.__enter__()
    except ServerUnavailable as e:
        _unavailable("the Phoenix server", e)
    try:
        yield server
    finally:
        server.close()
