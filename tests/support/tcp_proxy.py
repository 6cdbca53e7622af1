"""A TCP proxy that counts the connections made through it (how many TCP connections a client opened).

async with CountingProxy("127.0.0.1", backend_port) as proxy:
    ...  # point the client at proxy.url; proxy.accepted is the number of connections so far
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

_REQUEST_LINE = re.compile(rb"(?:^|\r\n)([A-Z]+) (\S+) HTTP/1\.1\r\n")


class CountingProxy:
    """Forwards every connection to ``host:port`` and counts them (``accepted``; ``open`` still open)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.accepted = 0
        self.open = 0
        self.requests: list[tuple[float, str]] = []
        """(time.monotonic(), "METHOD /path") of each request forwarded (request lines split across reads are
        not seen: small requests from one client are not split in practice)."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not running"
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self.open += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer, self._note), _pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the proxy is closing: end quietly (the stream server logs a cancelled handler as an error)
        finally:
            self.open -= 1
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            self._tasks.discard(task)

    def _note(self, chunk: bytes) -> None:
        now = time.monotonic()
        for method, path in _REQUEST_LINE.findall(chunk):
            self.requests.append((now, f"{method.decode()} {path.decode(errors='replace')}"))

    def times_of(self, request: str) -> list[float]:
        """When each ``request`` ("GET /feedback/ab") was forwarded."""
        return [t for t, r in self.requests if r == request]


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, note: Callable[[bytes], None] | None = None
) -> None:
    try:
        while chunk := await reader.read(64 * 1024):
            if note is not None:
                note(chunk)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
