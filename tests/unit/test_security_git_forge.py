"""The forge client is bounded in time and size and trusts no shape or text of an answer (issue #14, findings 6
and 12).

The attacks: a 300 MB pull-request API answer grew the operator by 905 MiB (its limit is 512 Mi); a server
dripping one byte at a time held the call past any timeout; a list item that is not an object raised
``TypeError`` out of the pass; the forge's ``message`` (or an HTML error page) reached status whole. Each test
runs the client against a raw HTTP server on 127.0.0.1 that misbehaves in one way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import ForgeError, GitError
from canopy_operator.gitops.forge import Forge, RepoRef

TOKEN = "gitea-token-0123456789"
CREDS = GitCredentials(username="user1", password=TOKEN)
REPO = RepoRef("user1", "backend")
MIB = 1024 * 1024
#: Longest a misbehaving call may take in these tests before it counts as "held" (the client's deadline is 1 s).
HELD = 10.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Served:
    url: str
    sent: list[int]
    """Bytes of body the server managed to write, per request."""


@asynccontextmanager
async def serving(body: Callable[[asyncio.StreamWriter, list[int]], Awaitable[None]]) -> AsyncIterator[Served]:
    """An HTTP/1.1 server on 127.0.0.1 that reads a request's head and answers with ``body``."""
    sent: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            sent.append(0)
            await body(writer, sent)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}/api/v1", sent)
    finally:
        server.close()
        await server.wait_closed()


def head(status: str, fields: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in fields.items()), "", ""]
    return "\r\n".join(lines).encode()


def answer(status: str, payload: bytes, content_type: str = "application/json") -> Callable[..., Awaitable[None]]:
    async def body(writer: asyncio.StreamWriter, sent: list[int]) -> None:
        fields = {"Content-Type": content_type, "Content-Length": str(len(payload)), "Connection": "close"}
        writer.write(head(status, fields) + payload)
        await writer.drain()
        sent[-1] += len(payload)

    return body


async def bounded(call: Awaitable[object]) -> tuple[BaseException | None, float]:
    """The exception ``call`` ended with (None if it returned) and how long it took; fails if it was held."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(call, HELD)
    except TimeoutError:
        pytest.fail(f"the forge call was still running after {HELD:.0f}s")
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


async def test_a_drip_feeding_forge_cannot_hold_the_call_past_its_deadline() -> None:
    async def drip(writer: asyncio.StreamWriter, sent: list[int]) -> None:
        writer.write(head("200 OK", {"Content-Type": "application/json", "Content-Length": "100000"}))
        writer.write(b"[")
        while True:
            await asyncio.sleep(0.2)
            writer.write(b" ")
            await writer.drain()
            sent[-1] += 1

    async with serving(drip) as served:
        forge = Forge("Gitea", served.url, CREDS, time_limit=1.0)
        error, took = await bounded(forge.find_pull_request(REPO, "canopy/x", "main"))
    assert isinstance(error, ForgeError), error
    assert took < 3.0
    assert "1s" in str(error)


async def test_an_answer_larger_than_the_cap_is_refused_without_reading_it_whole() -> None:
    item = json.dumps({"number": 1, "state": "open", "head": {"ref": "a"}, "base": {"ref": "b"}}).encode() + b","

    async def flood(writer: asyncio.StreamWriter, sent: list[int]) -> None:
        writer.write(head("200 OK", {"Content-Type": "application/json", "Connection": "close"}) + b"[")
        chunk = item * (64 * 1024 // len(item))
        while sent[-1] < 48 * MIB:
            writer.write(chunk)
            await writer.drain()
            sent[-1] += len(chunk)

    async with serving(flood) as served:
        forge = Forge("Gitea", served.url, CREDS, time_limit=5.0)
        error, _ = await bounded(forge.find_pull_request(REPO, "canopy/x", "main"))
    assert isinstance(error, ForgeError), error
    assert "1 MiB" in str(error)
    assert served.sent[0] < 16 * MIB


async def test_an_announced_oversized_answer_is_refused_from_its_header() -> None:
    async def announce(writer: asyncio.StreamWriter, sent: list[int]) -> None:
        writer.write(head("200 OK", {"Content-Type": "application/json", "Content-Length": str(300 * MIB)}))
        writer.write(b"[" + b" " * MIB)
        await writer.drain()
        sent[-1] += MIB + 1
        await asyncio.sleep(HELD)

    async with serving(announce) as served:
        forge = Forge("Gitea", served.url, CREDS, time_limit=5.0)
        error, took = await bounded(forge.find_pull_request(REPO, "canopy/x", "main"))
    assert isinstance(error, ForgeError), error
    assert "1 MiB" in str(error)
    assert took < 3.0


@pytest.mark.parametrize(
    "payload",
    [b"[1]", b'["x"]', b'[{"number": "one"}]', b'[{"number": 1, "head": "main"}]', b"[[[[[]]]]]", b"[" * 100000],
    ids=["number", "string", "number-not-int", "head-not-object", "nested-lists", "deep-nesting"],
)
async def test_every_unexpected_shape_is_a_forge_error(payload: bytes) -> None:
    async with serving(answer("200 OK", payload)) as served:
        forge = Forge("Gitea", served.url, CREDS, time_limit=5.0)
        error, _ = await bounded(forge.find_pull_request(REPO, "canopy/x", "main"))
    assert isinstance(error, ForgeError), repr(error)
    assert len(str(error)) <= 300


async def test_the_forges_message_reaches_the_error_capped_and_redacted() -> None:
    long_message = "\x1b[2J" + "Validation failed. " * 500 + f"token {TOKEN}"
    payload = json.dumps({"message": long_message}).encode()
    async with serving(answer("422 Unprocessable Entity", payload)) as served:
        forge = Forge("Gitea", served.url, CREDS, time_limit=5.0)
        error, _ = await bounded(forge.get_pull_request(REPO, 7))
    assert isinstance(error, ForgeError), repr(error)
    message = str(error)
    assert "HTTP 422" in message
    assert "Validation failed." in message
    assert len(message.encode()) <= 300
    assert TOKEN not in message
    assert "\x1b" not in message


async def test_an_error_page_is_reported_by_its_status_never_its_body() -> None:
    page = b"<html><body><h1>Internal error</h1><p>stack: secret-internal-path /srv/app.py</p></body></html>"
    async with serving(answer("500 Internal Server Error", page, "text/html")) as served:
        forge = Forge("Gitea", served.url, CREDS, time_limit=5.0)
        error, _ = await bounded(forge.get_pull_request(REPO, 7))
    assert isinstance(error, GitError), repr(error)
    message = str(error)
    assert "HTTP 500" in message
    assert "secret-internal-path" not in message
    assert "<html" not in message
