"""Test support for the Canopy backend: config files, a started simulator, log capture, a raw HTTP server.

The simulator helpers are what a rollout looks like from a test::

    path = write_config(tmp_path, ab_testing=True, prompt_b=CHALLENGER)
    async with running_simulator(path) as sim:
        ...
        await sim.restart(write_config(tmp_path, name="v2.yaml"))  # memory wiped, ids from 1

``RawHttpServer`` answers every connection with a scripted sequence of raw bytes, for garbage answers the
simulator cannot give (truncated bodies, wrong lengths, slow drips).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from canopy_devkit.simulator import RunningSimulator

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
LLAMA_STACK_URL = "http://llamastack-with-config-service.ai501.svc.cluster.local:8321"


def config_tree(
    *,
    summarize: bool = True,
    feedback: bool = True,
    ab_testing: bool = False,
    prompt: str | None = CHAMPION,
    prompt_b: str | None = None,
    model: str | None = "llama32",
) -> dict[str, Any]:
    """A merged values tree as the chart renders it into ``canopy-config.yaml``."""
    section: dict[str, Any] = {"enabled": summarize}
    if model is not None:
        section["model"] = model
    if prompt is not None:
        section["prompt"] = prompt
    if prompt_b is not None:
        section["prompt_b"] = prompt_b
    section.update(temperature=0.7, max_tokens=4096)
    return {
        "LLAMA_STACK_URL": LLAMA_STACK_URL,
        "summarize": section,
        "feedback": {"enabled": feedback},
        "ab_testing": {"enabled": ab_testing},
        "information-search": {"enabled": False, "vector_db_id": "latest"},
    }


def write_config(directory: Path, name: str = "canopy-config.yaml", **settings: Any) -> Path:
    """Write a config file (``config_tree(**settings)``) and return its path."""
    path = directory / name
    path.write_text(yaml.safe_dump(config_tree(**settings), sort_keys=False), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def running_simulator(config_path: Path, *, seed: int = 0) -> AsyncIterator[RunningSimulator]:
    """An in-process simulator on 127.0.0.1, started with ``config_path`` and stopped afterwards."""
    simulator = RunningSimulator(seed=seed)
    await simulator.start(config_path)
    try:
        yield simulator
    finally:
        await simulator.stop()


class FeedbackLogCapture(logging.Handler):
    """Collects the bare JSON lines the backend logs on ``canopy.feedback``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._logger = logging.getLogger("canopy.feedback")
        self._previous_level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def __enter__(self) -> Self:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._previous_level)


Script = Callable[[asyncio.StreamWriter], Awaitable[None]]


def canned(raw: bytes) -> Script:
    """Answer with these exact bytes, then close."""

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return script


def dripped(head: bytes, pieces: Sequence[bytes], delay: float) -> Script:
    """Answer with ``head``, then each piece after ``delay`` seconds."""

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        await writer.drain()
        for piece in pieces:
            await asyncio.sleep(delay)
            writer.write(piece)
            await writer.drain()

    return script


def http_head(status: str = "200 OK", content_type: str = "application/json", **headers: str) -> bytes:
    """A raw HTTP/1.1 response head; keyword headers use ``_`` for ``-``."""
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class RawHttpServer:
    """A one-script HTTP server on 127.0.0.1: reads each request, then runs the script on the connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests = 0
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            self.requests += 1
            await self.script(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up first: that is what several tests provoke
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
