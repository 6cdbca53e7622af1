"""The kubelet's container-log endpoint for envtest, which runs no kubelet: the API server proxies
``GET pods/{name}/log`` to the node a pod is bound to, so a test can serve an evaluation pod's log the way
a kubelet would, over HTTPS on 127.0.0.1 with a certificate of its own CA (the API server, started without
``--kubelet-certificate-authority``, does not check it). It honours ``limitBytes`` and ``tailLines``.

    async with PodLogServer() as logs:
        await logs.register_node(api)          # a Node whose kubelet endpoint is this server
        logs.append(namespace, pod, "eval", "a line\n")
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane.certs import CertificateAuthority
from canopy_devkit.simulator.runner import bound_port

NODE = "canopy-log-node"
MERGE = "application/merge-patch+json"


class PodLogServer:
    """Container logs by (namespace, pod, container), served as a kubelet serves them."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, str, str], str] = {}
        self.requests: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="canopy-pod-logs-")
        self.port = 0

    def append(self, namespace: str, pod: str, container: str, text: str) -> None:
        key = (namespace, pod, container)
        self.logs[key] = self.logs.get(key, "") + text

    async def _log(self, request: web.Request) -> web.Response:
        info = request.match_info
        key = (info["namespace"], info["pod"], info["container"])
        self.requests.append({"path": request.path, **request.query})
        if key not in self.logs:
            return web.Response(status=404, text="container not found")
        text = self.logs[key]
        tail = request.query.get("tailLines")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) > 0 else ""
        data = text.encode("utf-8")
        limit = request.query.get("limitBytes")
        if limit is not None:
            data = data[: int(limit)]
        return web.Response(body=data, content_type="text/plain")

    async def __aenter__(self) -> Self:
        authority = CertificateAuthority.create("canopy-test-kubelet-ca")
        pair = authority.issue_serving(["127.0.0.1"])
        cert, key = Path(self._dir.name) / "tls.crt", Path(self._dir.name) / "tls.key"
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._log)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context).start()
        self.port = bound_port(self._runner, "the pod log server")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._dir.cleanup()

    async def register_node(self, api: ApiClient, name: str = NODE) -> str:
        """A Ready Node whose kubelet endpoint is this server (created once, re-pointed after)."""
        core = client.CoreV1Api(api)
        try:
            await core.create_node({"metadata": {"name": name}})  # type: ignore[arg-type]  # dicts serialise as-is
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        status: dict[str, Any] = {
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],  # no Hostname: it would be tried first
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
            }
        }
        await core.patch_node_status(name, status, _content_type=MERGE)  # type: ignore[call-arg]  # a documented **kwargs option
        return name
