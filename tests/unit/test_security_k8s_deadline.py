"""No Kubernetes API call waits forever: a stalled API server or a half-open connection ends in Unavailable.

The attack (issue #14, finding 9): with no deadline, a daemon whose API call hit a server that accepts the
connection and never answers hung for good, and its experiment with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from canopy_operator.k8s.errors import KubeError, Unavailable
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


@pytest.mark.parametrize(
    ("status", "size", "error", "message"),
    [
        (
            "500 Internal Server Error",
            8 * 2**20,
            Unavailable,
            r"^get ConfigMap ns/canopy-config: 500 Internal Server Error: x+$",
        ),
        ("200 OK", 5 * 2**20, KubeError, r"^get ConfigMap ns/canopy-config: answer is over 4194304 bytes$"),
    ],
)
async def test_a_huge_answer_is_cut_and_named_once(
    status: str, size: int, error: type[KubeError], message: str
) -> None:
    """An error answer is read only as far as it is quoted; an object answer is refused past its bound."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode())
        with contextlib.suppress(ConnectionError):
            for _ in range(size // 65536):
                writer.write(b"x" * 65536)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"))
    try:
        with pytest.raises(error, match=message) as raised:
            await Gateway(api, deadline=10).get_configmap("ns", "canopy-config")
        assert type(raised.value) is error
        assert len(str(raised.value)) < 400
    finally:
        await api.close()
        server.close()
        await server.wait_closed()
