"""Async client of the Canopy backend (Generation 1): typed answers, one error tree, bounded time and memory.

Every call is bounded by ``timeout`` seconds in total (connect, answer and the whole body, streams included)
and by ``max_body_bytes`` (the body is read in chunks and abandoned past the limit). The wire is aiohttp's
client, one small session per client (:class:`AiohttpWire`); its errors never leave this module: they become
:mod:`canopy_operator.sources.canopy.errors`.

Why aiohttp here and httpx for the other servers: a daemon polls its backend twice per interval for the life of
the experiment, and at 500 idle experiments these polls were about half the operator's CPU. One request cost
0.68 ms of CPU through httpx (its client layer, httpcore and anyio) and 0.16 ms through aiohttp, whose parser is
compiled (bench/RESULTS.md, issue #20); aiohttp is already a dependency (the Kubernetes client's wire).

The two stores are read either whole (``feedback()``, ``ab_feedback()``: every entry built and checked) or as
logs (``feedback_log()``, ``ab_log()``: parsed as they arrive, entries built when a poll counts them;
:mod:`.logs`), which is what polls use.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from http import HTTPStatus
from typing import Any, TypeVar, cast

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError

from canopy_operator.core.collect import AbEntry, FeedbackEntry
from canopy_operator.core.export import parse_export
from canopy_operator.core.readings import FeedbackLog, VoteLog
from canopy_operator.sources.canopy.errors import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendStreamError,
    BackendUnreachable,
    describe_validation,
)
from canopy_operator.sources.canopy.logs import AB_LOG, FEEDBACK_LOG, LogShape, Undecided, stream_log
from canopy_operator.sources.canopy.models import (
    AbAnswers,
    AbFeedbackList,
    ErrorDetail,
    FeatureFlags,
    FeedbackAccepted,
    FeedbackList,
    Gen2FeatureFlags,
    PromptKey,
)
from canopy_operator.sources.canopy.sse import SseDecoder
from canopy_operator.sources.canopy.wire import AiohttpWire, Answer, WireFactory
from canopy_operator.sources.http import REMOTE_TEXT_LIMIT, ClosingClient, short

__all__ = ["PROMPT_B_MISSING", "READINESS_PROMPT", "REMOTE_TEXT_LIMIT", "CanopyClient"]

CONNECT_RETRY_SECONDS = 0.5
"""Pause before the one retry of a GET whose connection was refused (nothing was sent)."""

PROMPT_B_MISSING = "prompt_b is not configured in summarize config"
"""``detail`` of the 400 ``POST /summarize/ab`` answers while no challenger is configured."""

READINESS_PROMPT = "ping"
"""The tiny text :meth:`CanopyClient.ab_ready` sends (the backend starts two model calls for it)."""

_ERROR_BODY_LIMIT = 64 * 1024
INLINE_PARSE_BYTES = 64 * 1024
"""Answers up to this size are parsed on the event loop (a thread hop costs more than parsing them)."""
_CHUNK = 16 * 1024
_YIELD_BYTES = 1024 * 1024
_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
_E = TypeVar("_E", AbEntry, FeedbackEntry)


class CanopyClient(ClosingClient):
    """One Canopy backend at ``base_url`` (e.g. ``http://canopy-backend.ns.svc:8000``); ``async with`` closes it."""

    def __init__(
        self,
        base_url: str,
        timeout: float,
        max_body_bytes: int = 32 * 1024 * 1024,
        *,
        max_log_bytes: int | None = None,
        tls: ssl.SSLContext | None = None,
        wire: WireFactory = AiohttpWire,
    ) -> None:
        """``tls``: the trust store to verify HTTPS with; share one (``ssl.create_default_context()``) across
        clients, since building one loads the CA bundle, which was half the CPU of an idle reconcile pass
        (bench/RESULTS.md). ``wire``: what sends the requests (tests give one that fails on purpose)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.max_log_bytes = max_body_bytes if max_log_bytes is None else max_log_bytes
        """The limit of the two stores read as logs (``GET /feedback/ab``, ``GET /feedback``): streamed, so what a
        poll keeps is the body's bytes and no parsed copy of them, which lets a larger store be read."""
        self._wire = wire(self.base_url, tls)

    async def aclose(self) -> None:
        """Close the connections; the client is not used again."""
        await self._wire.aclose()

    @property
    def closed(self) -> bool:
        return self._wire.closed

    # ---- reads -------------------------------------------------------------------------------------------

    async def feature_flags(self, generation: int = 1) -> FeatureFlags | Gen2FeatureFlags:
        """The flags the running process read at start (the liveness check: no health endpoint); a Generation 2
        backend serves only its own sections' flags."""
        if generation == 2:
            return await self._json_call("GET", "/feature-flags", Gen2FeatureFlags)
        return await self._json_call("GET", "/feature-flags", FeatureFlags)

    async def feedback(self) -> FeedbackList:
        """Every thumbs entry since the process started."""
        return await self._json_call("GET", "/feedback", FeedbackList)

    async def ab_feedback(self) -> AbFeedbackList:
        """Every A/B vote since the process started, each built and checked (see :meth:`ab_log`)."""
        return await self._json_call("GET", "/feedback/ab", AbFeedbackList)

    async def feedback_log(self) -> FeedbackLog:
        """``GET /feedback`` as a log: every id known, an entry built and checked when a poll asks for it
        (:mod:`canopy_operator.sources.canopy.logs`); what a poll of a large store with little new needs."""
        entries, total = await self._log_call(FEEDBACK_LOG)
        return FeedbackLog(entries=entries, total=total)

    async def ab_log(self) -> VoteLog:
        """``GET /feedback/ab`` as a log, like :meth:`feedback_log`."""
        entries, total = await self._log_call(AB_LOG)
        return VoteLog(entries=entries, total=total)

    async def export(self) -> str:
        """The ``/feedback/export`` YAML, checked to have exactly the backend's shape."""
        endpoint = "GET /feedback/export"
        body = await self._bounded(self._body_call("GET", "/feedback/export", None), endpoint)
        text = _decode_utf8(body, endpoint)
        try:
            parse_export(text)
        except ValueError as exc:
            raise BackendProtocolError(endpoint, str(exc)) from exc
        return text

    # ---- streams -----------------------------------------------------------------------------------------

    async def ab_ready(self) -> bool:
        """Whether ``/summarize/ab`` serves, i.e. a challenger is configured; reads only the first event.

        ``False`` on the 400 "prompt_b is not configured" answer; a disabled flag (404) raises
        ``BackendHTTPError``. The real backend still runs both model calls for the tiny prompt.
        """
        endpoint = "POST /summarize/ab"
        return await self._bounded(self._ab_ready(endpoint), endpoint)

    async def summarize(self, prompt: str) -> str:
        """The answer of ``/summarize`` (its deltas joined)."""
        endpoint = "POST /summarize"
        return await self._bounded(self._summarize(endpoint, prompt), endpoint)

    async def summarize_ab(self, prompt: str) -> AbAnswers:
        """Both answers of ``/summarize/ab``, the shuffled sides mapped back to ``prompt``/``prompt_b``."""
        endpoint = "POST /summarize/ab"
        return await self._bounded(self._summarize_ab(endpoint, prompt), endpoint)

    # ---- writes (simulated users, demo, tests) -----------------------------------------------------------

    async def post_feedback(
        self,
        input_text: str,
        response_text: str,
        rating: str,
        *,
        feature: str = "summarize",
        comment: str | None = None,
    ) -> int:
        """Submit a thumbs entry; returns its ``feedback_id``."""
        body = {
            "input_text": input_text,
            "response_text": response_text,
            "rating": rating,
            "feature": feature,
            "comment": comment,
        }
        answer = await self._json_call("POST", "/feedback", FeedbackAccepted, body)
        return answer.feedback_id

    async def post_ab_feedback(
        self,
        input_text: str,
        response_a: str,
        response_b: str,
        preference: str,
        prompt_mapping: Mapping[str, str],
        *,
        feature: str = "summarize",
    ) -> int:
        """Submit an A/B vote (``preference`` ``a``/``b``/``tie`` as shown); returns its ``feedback_id``."""
        body = {
            "input_text": input_text,
            "response_a": response_a,
            "response_b": response_b,
            "preference": preference,
            "prompt_mapping": dict(prompt_mapping),
            "feature": feature,
        }
        answer = await self._json_call("POST", "/feedback/ab", FeedbackAccepted, body)
        return answer.feedback_id

    # ---- plumbing ----------------------------------------------------------------------------------------

    async def _json_call(self, method: str, path: str, model: type[_M], body: Any = None) -> _M:
        endpoint = f"{method} {path}"
        raw = await self._bounded(self._body_call(method, path, body), endpoint)
        try:
            if len(raw) <= INLINE_PARSE_BYTES:
                return model.model_validate_json(raw)
            # A large answer is parsed off the event loop: one tenant's backend must not stall the others.
            return await asyncio.to_thread(model.model_validate_json, raw)
        except ValidationError as exc:
            raise BackendProtocolError(endpoint, describe_validation(exc)) from exc

    async def _log_call(self, shape: LogShape[_E]) -> tuple[Sequence[_E], int]:
        read = await self._bounded(self._log_read(shape), shape.endpoint)
        if not isinstance(read, Undecided):
            return read
        if sum(map(len, read.chunks)) <= INLINE_PARSE_BYTES:
            return read.decide()
        return await asyncio.to_thread(read.decide)  # one tenant's backend must not stall the others

    async def _log_read(self, shape: LogShape[_E]) -> tuple[Sequence[_E], int] | Undecided[_E]:
        async with (
            self._open("GET", shape.path, None) as response,
            aclosing(self._chunks(response, shape.endpoint, self.max_log_bytes)) as chunks,
        ):
            return await stream_log(chunks, shape)

    async def _bounded(self, work: Awaitable[_T], endpoint: str) -> _T:
        """Run one call under the total deadline (the wire itself has none)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await work
        except TimeoutError as exc:
            raise BackendUnreachable(endpoint, f"no complete answer within {self.timeout:g}s") from exc

    async def _body_call(self, method: str, path: str, body: Any) -> bytes:
        async with self._open(method, path, body) as response:
            return b"".join([chunk async for chunk in self._chunks(response, f"{method} {path}")])

    @asynccontextmanager
    async def _open(self, method: str, path: str, body: Any) -> AsyncIterator[Answer]:
        """Send a request; yield the 200 answer with its body unread; raise the domain error otherwise."""
        endpoint = f"{method} {path}"
        try:
            try:
                response = await self._wire.send(method, path, body)
            except aiohttp.ClientConnectorError:
                if method != "GET":
                    raise
                # Refused before anything was sent: a Service can still route to a pod that just went away
                # (a rollout has finished, the endpoints not yet followed). Once more, within the call's deadline.
                await asyncio.sleep(CONNECT_RETRY_SECONDS)
                response = await self._wire.send(method, path, body)
        except aiohttp.InvalidURL as exc:
            raise BackendUnreachable(endpoint, f"cannot connect to {self.base_url}: invalid URL") from exc
        except aiohttp.ClientConnectorError as exc:
            raise BackendUnreachable(endpoint, f"cannot connect to {self.base_url}: {_reason(exc)}") from exc
        except _WIRE_ERRORS as exc:
            raise BackendUnreachable(endpoint, f"no answer from {self.base_url}: {_wire_reason(exc)}") from exc
        complete = False
        try:
            if response.status_code != 200:
                raise BackendHTTPError(endpoint, response.status_code, await self._error_detail(response))
            yield response
            complete = True
        except BackendError:
            raise
        except _WIRE_ERRORS as exc:
            raise BackendProtocolError(endpoint, f"answer cut short: {_wire_reason(exc)}") from exc
        finally:
            # A body read to its end gives the connection back to the pool; anything else (an error, a stream
            # left after its first event, a cancellation) closes it, so nothing half-read is ever reused.
            response.finish(reuse=complete)

    async def _chunks(self, response: Answer, endpoint: str, limit: int | None = None) -> AsyncGenerator[bytes, None]:
        """The body as it arrives, in chunks of ``_CHUNK`` bytes or more (small reads are gathered, so a body sent
        a few bytes at a time costs no more memory than its size), abandoned past ``limit`` (default
        ``max_body_bytes``); other tasks get the event loop at least every ``_YIELD_BYTES`` (what the caller does
        with each chunk runs in between)."""
        limit = self.max_body_bytes if limit is None else limit
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BackendProtocolError(endpoint, f"answer of {declared} bytes is over {limit}")
        pending = bytearray()
        received = unyielded = 0
        async for chunk in response.chunks():
            received += len(chunk)
            if received > limit:
                raise BackendProtocolError(endpoint, f"answer is over {limit} bytes")
            if pending or len(chunk) < _CHUNK:
                pending += chunk
                if len(pending) < _CHUNK:
                    continue
                chunk = bytes(pending)
                pending.clear()
            yield chunk
            unyielded += len(chunk)
            if unyielded >= _YIELD_BYTES:
                unyielded = 0
                await asyncio.sleep(0)
        if pending:
            yield bytes(pending)

    async def _error_detail(self, response: Answer) -> str:
        """FastAPI's ``detail`` message, short; for any other body only the standard phrase of the status code.

        A raw body is never repeated: status conditions are readable by the ``view`` role, and a body could
        come from anything the URL reaches (issue #14, finding 4)."""
        body = bytearray()
        async for chunk in response.chunks():
            body += chunk
            if len(body) > _ERROR_BODY_LIMIT:
                break
        try:
            detail = ErrorDetail.model_validate_json(body).detail
        except ValidationError:
            return _status_phrase(response.status_code)
        return short(detail) or _status_phrase(response.status_code)

    async def _events(self, response: Answer, endpoint: str) -> AsyncGenerator[str, None]:
        """The data payloads of an SSE answer, bounded by ``max_body_bytes`` in total."""
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise BackendProtocolError(endpoint, f"expected an event stream, got content-type {content_type!r}")
        decoder = SseDecoder()
        received = 0
        try:
            async for chunk in response.chunks():
                received += len(chunk)
                if received > self.max_body_bytes:
                    raise BackendProtocolError(endpoint, f"stream is over {self.max_body_bytes} bytes")
                for payload in decoder.feed(chunk):
                    yield payload
            decoder.finish()
        except ValueError as exc:
            raise BackendProtocolError(endpoint, str(exc)) from exc

    async def _summarize(self, endpoint: str, prompt: str) -> str:
        parts: list[str] = []
        async with (
            self._open("POST", "/summarize", {"prompt": prompt}) as response,
            aclosing(self._events(response, endpoint)) as events,
        ):
            async for payload in events:
                parts.append(_summary_delta(payload, endpoint))
        return "".join(parts)

    async def _ab_ready(self, endpoint: str) -> bool:
        try:
            async with (
                self._open("POST", "/summarize/ab", {"prompt": READINESS_PROMPT}) as response,
                aclosing(self._events(response, endpoint)) as events,
            ):
                async for payload in events:
                    _ab_mapping(payload, endpoint)
                    return True
        except BackendHTTPError as exc:
            if exc.status == 400 and exc.detail == PROMPT_B_MISSING:
                return False
            raise
        raise BackendProtocolError(endpoint, "stream closed before its ab_config event")

    async def _summarize_ab(self, endpoint: str, prompt: str) -> AbAnswers:
        mapping: dict[str, PromptKey] | None = None
        parts: dict[str, list[str]] = {"a": [], "b": []}
        done = False
        async with (
            self._open("POST", "/summarize/ab", {"prompt": prompt}) as response,
            aclosing(self._events(response, endpoint)) as events,
        ):
            async for payload in events:
                if done:
                    raise BackendProtocolError(endpoint, f"event after [DONE]: {payload[:120]}")
                if mapping is None:
                    mapping = _ab_mapping(payload, endpoint)
                elif payload == "[DONE]":
                    done = True
                else:
                    variant, delta = _ab_delta(payload, endpoint)
                    parts[variant].append(delta)
        if mapping is None or not done:
            raise BackendProtocolError(endpoint, "stream closed before [DONE] (truncated)")
        return AbAnswers(mapping=mapping, response_a="".join(parts["a"]), response_b="".join(parts["b"]))


def _summary_delta(payload: str, endpoint: str) -> str:
    event = _json_object(payload, endpoint)
    if isinstance(event.get("delta"), str) and len(event) == 1:
        return cast(str, event["delta"])
    if isinstance(event.get("error"), str):
        raise BackendStreamError(endpoint, short(event["error"]))
    if event.get("type") == "shield_violation":
        raise BackendStreamError(endpoint, short(str(event.get("message"))))
    raise BackendProtocolError(endpoint, f"unexpected event {payload[:120]}")


def _json_object(payload: str, endpoint: str) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise BackendProtocolError(endpoint, f"event is not JSON: {payload[:120]!r}") from exc
    if not isinstance(event, dict):
        raise BackendProtocolError(endpoint, f"event is not a JSON object: {payload[:120]}")
    return cast(dict[str, Any], event)


def _ab_mapping(payload: str, endpoint: str) -> dict[str, PromptKey]:
    event = _json_object(payload, endpoint)
    mapping = event.get("mapping")
    if event.get("type") != "ab_config" or not isinstance(mapping, dict):
        raise BackendProtocolError(endpoint, f"first event must be the ab_config mapping, got {payload[:120]}")
    if sorted(mapping) != ["a", "b"] or sorted(map(str, mapping.values())) != ["prompt", "prompt_b"]:
        raise BackendProtocolError(endpoint, f"ab_config mapping must pair a/b with prompt/prompt_b: {mapping}")
    return cast(dict[str, PromptKey], mapping)


def _ab_delta(payload: str, endpoint: str) -> tuple[str, str]:
    event = _json_object(payload, endpoint)
    variant = event.get("variant")
    if variant not in ("a", "b"):
        raise BackendProtocolError(endpoint, f"event without variant a/b: {payload[:120]}")
    if isinstance(event.get("error"), str):
        raise BackendStreamError(endpoint, short(event["error"]), variant=variant)
    if not isinstance(event.get("delta"), str) or len(event) != 2:
        raise BackendProtocolError(endpoint, f"unexpected event {payload[:120]}")
    return variant, event["delta"]


def _decode_utf8(body: bytes, endpoint: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BackendProtocolError(endpoint, f"answer is not UTF-8: {exc.reason}") from exc


def _reason(exc: Exception) -> str:
    return _one_line(str(exc)) or type(exc).__name__


_WIRE_ERRORS = (aiohttp.ClientError, HttpProcessingError, OSError)
"""What the wire raises; ``HttpProcessingError`` is how aiohttp's pure-Python parser (``AIOHTTP_NO_EXTENSIONS``)
reports a malformed body, outside ``ClientError``."""
_WORDS_OF_OUR_OWN = (aiohttp.ClientConnectionError, OSError)
"""Errors whose text is the client's or the system's own (connection refused, reset, disconnected, TLS)."""


def _wire_reason(exc: Exception) -> str:
    """What went wrong on the wire, never in the answer's own bytes: aiohttp's parser errors quote the offending
    status line, header or chunk (``Got more than 8190 bytes when reading: b'...'``), and conditions are
    readable by the ``view`` role (issue #14, finding 4), so those are named by their type alone."""
    if isinstance(exc, _WORDS_OF_OUR_OWN):
        return _reason(exc)
    return f"malformed or incomplete answer ({type(exc).__name__})"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(no detail)"
