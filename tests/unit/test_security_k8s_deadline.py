"""No Kubernetes API call waits forever: a stalled API server or a half-open connection ends in Unavailable.

The attack (issue #14, finding 9): with no deadline, a daemon whose API call hit a server that accepts the
connection and never answers hung for good, and its experiment with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from canopy_operator.k8s.errors import Unavailable
from canopy_operator.k8s.gateway import Gateway


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections on 127.0.0.1, reads the request and never answers (a stalled API server)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_call_to_a_silent_api_server_ends_at_its_deadline(silent_server: str) -> None:
    config = client.Configuration(host=silent_server)
    api = client.ApiClient(config)
    try:
        gateway = Gateway(api, deadline=0.5)
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"get ConfigMap ns/canopy-config: no answer within 0\.5s"):
            await gateway.get_configmap("ns", "canopy-config")
        assert time.monotonic() - started < 3.0
    finally:
        await api.close()
