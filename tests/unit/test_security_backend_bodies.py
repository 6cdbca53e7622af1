"""What a backend answers never comes back whole: errors carry the status and a short message, never a body.

The attack (issue #14, finding 4): ``backend.url`` named any host, and up to 300 characters of any non-200
body were copied into ``status.conditions``, readable by every holder of the ``view`` role.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from canopy_operator.sources.canopy.client import REMOTE_TEXT_LIMIT, CanopyClient
from canopy_operator.sources.canopy.errors import (
    BackendHTTPError,
    BackendProtocolError,
    BackendStreamError,
    BackendUnreachable,
)
from tests.support.simulator import RawHttpServer, canned, http_head

SECRET_PAGE = "<html>instance-role credentials: AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</html>"


@asynccontextmanager
async def client_answering(status: int, body: bytes, content_type: str = "text/html") -> AsyncIterator[CanopyClient]:
    """A client of a server on 127.0.0.1 that gives every request this answer."""
    head = http_head(f"{status} Whatever", content_type, Content_Length=str(len(body)))
    async with RawHttpServer(canned(head + body)) as server, CanopyClient(server.url, timeout=5) as client:
        yield client


async def test_a_foreign_error_page_is_not_repeated() -> None:
    async with client_answering(403, SECRET_PAGE.encode()) as client:
        with pytest.raises(BackendHTTPError) as raised:
            await client.feature_flags()
    assert str(raised.value) == "GET /feature-flags: backend answered 403: Forbidden"
    assert "AKIA" not in str(raised.value)


async def test_a_long_fastapi_detail_is_cut_to_one_short_line() -> None:
    detail = "line one\nline two\x1b[31m " + "x" * 5000
    async with client_answering(404, json.dumps({"detail": detail}).encode(), "application/json") as c:
        with pytest.raises(BackendHTTPError) as raised:
            await c.feedback()
    assert raised.value.detail.startswith("line one line two")
    assert len(raised.value.detail) <= REMOTE_TEXT_LIMIT
    assert "\x1b" not in raised.value.detail


async def test_a_stream_error_event_is_cut_too() -> None:
    stream = b'data: {"error": "' + b"y" * 4000 + b'"}\n\n'
    async with client_answering(200, stream, "text/event-stream") as client:
        with pytest.raises(BackendStreamError) as raised:
            await client.summarize("text")
    assert len(raised.value.detail) <= REMOTE_TEXT_LIMIT


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nX-Leak: " + b"AKIAIOSFODNN7EXAMPLE" * 500 + b"\r\n\r\n",  # a header over the bound
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nAKIAIOSFODNN7EXAMPLE\r\n",  # a chunk size
        b"AKIAIOSFODNN7EXAMPLE 200 OK\r\n\r\n",  # a status line
    ],
)
async def test_a_malformed_answer_is_named_without_quoting_its_bytes(answer: bytes) -> None:
    """aiohttp's parser errors quote what they could not parse; the client names the error by type instead."""
    async with RawHttpServer(canned(answer)) as server, CanopyClient(server.url, timeout=5) as client:
        with pytest.raises((BackendUnreachable, BackendProtocolError)) as raised:
            await client.feedback_log()
    assert "AKIA" not in str(raised.value)
    assert "malformed or incomplete answer" in str(raised.value)
