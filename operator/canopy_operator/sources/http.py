"""A bounded JSON-over-HTTP client for the vote and prompt servers (MLflow, Phoenix): one error tree, bounded
time and memory, no raw body ever repeated.

Every call is bounded by ``timeout`` seconds in total and by ``max_body_bytes`` (read in chunks, abandoned past
the limit); large answers are parsed off the event loop. Redirects are not followed (a redirect could take the
credentials elsewhere). httpx errors never leave this module: they become :class:`ServerError` subclasses, which
are :class:`~canopy_operator.sources.base.SourceError` with a kind, so the pass reports them as it reports the
Canopy backend's. A server's own error message (MLflow's ``message``, FastAPI's ``detail``) is kept short and
printable; any other body is replaced by the status phrase.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from canopy_operator.sources.base import ErrorKind, RequestTimer, SourceError

INLINE_PARSE_BYTES = 64 * 1024
REMOTE_TEXT_LIMIT = 120
"""Characters of a server's own message (MLflow ``message``, FastAPI ``detail``, a stream ``error``) kept in
errors and status (the Canopy client uses the same bound)."""
_ERROR_BODY_LIMIT = 64 * 1024
_T = TypeVar("_T")
POOLED_KEEPALIVE_SECONDS = 120.0
"""Seconds an idle connection of a pooled client (the Canopy client kept for a daemon's life) is kept: longer
than the default poll interval (30 s), so an idle experiment's poll reuses its connection when the server keeps
it open as long (aiohttp: 75 s; uvicorn closes after 5 s, and the pool then opens a new one)."""


class ServerError(SourceError):
    """A failure talking to a vote or prompt server; one line naming the server kind and the endpoint."""

    def __init__(self, endpoint: str, problem: str) -> None:
        self.endpoint = endpoint
        self.problem = problem
        super().__init__(f"{endpoint}: {problem}")


class ServerUnreachable(ServerError):
    """No usable answer: connection refused, name not resolved, connection lost, timeout."""

    kind: ErrorKind = "unreachable"


class ServerHTTPError(ServerError):
    """An answer with an unexpected status; ``code`` is the server's error code when it gave one."""

    def __init__(self, endpoint: str, status: int, detail: str, code: str | None = None) -> None:
        self.status = status
        self.detail = detail
        self.code = code
        self.kind = "http_5xx" if status >= 500 else "http_4xx"
        super().__init__(endpoint, f"answered {status}: {detail}")


class ServerProtocolError(ServerError):
    """An answer of the wrong shape: not JSON, wrong types, too big."""


def short(text: str) -> str:
    """Remote text for a status message: one line of printable characters, at most ``REMOTE_TEXT_LIMIT``."""
    line = "".join(ch if ch.isprintable() else " " for ch in " ".join(text.split()))
    return line if len(line) <= REMOTE_TEXT_LIMIT else line[: REMOTE_TEXT_LIMIT - 3] + "..."


def json_object(value: object) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (a field of the wrong type reads as absent)."""
    return value if isinstance(value, dict) else {}


def iso_time(text: object) -> datetime | None:
    """An RFC 3339 time of an answer (``Z`` accepted), or None when absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "unknown status"


def _null_timer(_: str) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


def bounded_client(
    *,
    timeout: float,
    headers: Mapping[str, str],
    tls: ssl.SSLContext | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    base_url: str = "",
    auth: httpx.Auth | None = None,
) -> httpx.AsyncClient:
    """The one way the adapters make an httpx client (the Canopy client has its own wire,
    :mod:`canopy_operator.sources.canopy.wire`): a timeout, no redirects, no compression (the body bounds count
    what is sent), the process's trust store, and httpx's default pool."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout),
        headers={"Accept-Encoding": "identity", **headers},
        auth=auth,
        transport=transport,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
        verify=tls if tls is not None else ssl.create_default_context(),
    )


class ClosingClient:
    """An adapter holding an ``httpx.AsyncClient`` in ``_http``: ``async with`` closes it (an adapter on another
    wire overrides :meth:`aclose`)."""

    _http: httpx.AsyncClient

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()


class JsonApi(ClosingClient):
    """JSON calls to one server at ``base_url``; ``name`` (``MLflow``, ``Phoenix``) prefixes endpoints."""

    def __init__(
        self,
        name: str,
        base_url: str,
        timeout: float,
        max_body_bytes: int,
        *,
        bearer: str | None = None,
        basic: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        timer: RequestTimer | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.timer: RequestTimer = timer or _null_timer
        headers = {"Accept": "application/json"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        self._http = bounded_client(
            base_url=self.base_url,
            timeout=timeout,
            headers=headers,
            auth=httpx.BasicAuth(*basic) if basic is not None else None,
            transport=transport,
            tls=tls,
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        template: str | None = None,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, Any]:
        """Status and parsed JSON of one call; ``template`` names the endpoint in errors and metrics (a path
        without ids). A status outside ``ok`` raises :class:`ServerHTTPError` (404 included, unless listed)."""
        endpoint = f"{self.name} {method} {template or path}"
        with self.timer(template or path):
            status, raw = await self._bounded(self._send(method, path, params, body, ok, endpoint), endpoint)
            if not raw or status != 200:
                return status, None  # an expected 404 answers "none": its body is not used
            try:
                if len(raw) <= INLINE_PARSE_BYTES:
                    return status, json.loads(raw)
                return status, await asyncio.to_thread(json.loads, raw)  # one tenant's server must not stall others
            except (ValueError, UnicodeDecodeError) as exc:
                raise ServerProtocolError(endpoint, f"answer is not JSON ({type(exc).__name__})") from None

    async def _bounded(self, work: Awaitable[_T], endpoint: str) -> _T:
        try:
            async with asyncio.timeout(self.timeout):
                return await work
        except TimeoutError:
            raise ServerUnreachable(endpoint, f"no complete answer within {self.timeout:g}s") from None
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(endpoint, f"timed out ({type(exc).__name__})") from None
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            raise ServerUnreachable(
                endpoint, f"cannot connect to {self.base_url}: {short(str(exc)) or type(exc).__name__}"
            ) from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise ServerUnreachable(endpoint, f"no answer from {self.base_url}: {type(exc).__name__}") from None

    async def _send(
        self, method: str, path: str, params: Mapping[str, Any] | None, body: Any, ok: tuple[int, ...], endpoint: str
    ) -> tuple[int, bytes]:
        request = self._http.build_request(method, path, params=params, json=body)
        response = await self._http.send(request, stream=True)
        try:
            if response.status_code not in ok:
                detail, code = await self._error(response)
                raise ServerHTTPError(endpoint, response.status_code, detail, code)
            return response.status_code, await self._read(response, endpoint)
        finally:
            await response.aclose()

    async def _read(self, response: httpx.Response, endpoint: str) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise ServerProtocolError(endpoint, f"answer of {declared} bytes is over {self.max_body_bytes}")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise ServerProtocolError(endpoint, f"answer is over {self.max_body_bytes} bytes")
        return bytes(body)

    async def _error(self, response: httpx.Response) -> tuple[str, str | None]:
        """The server's own short message and error code (MLflow ``message``/``error_code``, FastAPI ``detail``)."""
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > _ERROR_BODY_LIMIT:
                return _phrase(response.status_code), None
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _phrase(response.status_code), None
        if not isinstance(data, dict):
            return _phrase(response.status_code), None
        message = data.get("message", data.get("detail"))
        code = data.get("error_code")
        text = short(message) if isinstance(message, str) else ""
        return text or _phrase(response.status_code), code if isinstance(code, str) else None
