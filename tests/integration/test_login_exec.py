"""The operator logs in through a kubeconfig exec plugin, the way EKS, GKE and OIDC users' kubeconfigs do.

The plugin prints an ``ExecCredential`` with the admin user's client certificate, and the kubeconfig holds no
other credential: the experiment reaching Running proves that Kopf (watching it, adding its finalizer) and the
operator's own client (writing its status) both authenticated through the plugin.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane.kubeconfig import write_private
from tests.support.experiments import Experiments, deployed_backend
from tests.support.kopf_runner import run_operator
from tests.support.kubelet import FakeKubelet

pytestmark = pytest.mark.integration

EXEC_API = "client.authentication.k8s.io/v1beta1"

PLUGIN = """\
import json, pathlib, sys
here = pathlib.Path(sys.argv[1])
with (here / "runs").open("a") as runs:
    runs.write("run\\n")
status = {
    "clientCertificateData": (here / "user.crt").read_text(),
    "clientKeyData": (here / "user.key").read_text(),
}
print(json.dumps({"apiVersion": %s, "kind": "ExecCredential", "status": status}))
"""


def exec_kubeconfig(admin_kubeconfig: Path, workdir: Path, namespace: str) -> Path:
    """The admin's cluster, and a user whose certificate only the plugin in ``workdir`` prints."""
    admin: dict[str, Any] = yaml.safe_load(admin_kubeconfig.read_text(encoding="utf-8"))
    user = admin["users"][0]["user"]
    write_private(workdir / "user.crt", base64.b64decode(user["client-certificate-data"]))
    write_private(workdir / "user.key", base64.b64decode(user["client-key-data"]))
    script = workdir / "plugin.py"
    script.write_text(PLUGIN % json.dumps(EXEC_API), encoding="utf-8")
    plugin = {"apiVersion": EXEC_API, "command": sys.executable, "args": [str(script), str(workdir)]}
    context = {"cluster": "envtest", "user": "via-plugin", "namespace": namespace}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "via-plugin", "user": {"exec": plugin}}],
        "contexts": [{"name": "plugin", "context": context}],
        "current-context": "plugin",
    }
    return write_private(workdir / "kubeconfig", yaml.safe_dump(config))


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    kubelet_dir = tmp_path / "kubelet"
    kubelet_dir.mkdir()
    async with deployed_backend(admin_api, namespace, kubelet_dir) as kubelet:
        yield kubelet


async def test_kopf_and_the_operators_client_log_in_through_an_exec_plugin(
    admin_api: ApiClient, admin_kubeconfig: Path, namespace: str, backend: FakeKubelet, tmp_path: Path
) -> None:
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    kubeconfig = exec_kubeconfig(admin_kubeconfig, plugin_dir, namespace)
    exp = Experiments(admin_api, namespace)
    await exp.create(backend.url)

    with run_operator(kubeconfig, namespace=namespace):
        status = await exp.wait_phase("Running")  # status written by the operator's own client

    assert status["phase"] == "Running"
    obj = await exp.get()
    assert obj["metadata"].get("finalizers"), "Kopf, logged in through the plugin, added its finalizer"
    runs = (plugin_dir / "runs").read_text(encoding="utf-8").split()
    assert len(runs) >= 2, "one run for the operator's client at start-up, one for Kopf's login"
