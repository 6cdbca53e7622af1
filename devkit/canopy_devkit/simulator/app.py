"""The simulated Generation 1 Canopy backend: one process's state and its endpoints (aiohttp).

Mirrors the backend's source: the same checks in the same order, the same bodies, the same JSON log lines
on ``canopy.feedback``. Answers come from a hash of the system prompt and the input text, not a model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from canopy_devkit.simulator.config import DEFAULT_SUMMARIZE_PROMPT, BackendConfig
from canopy_devkit.simulator.http import (
    Handler,
    detail,
    fastapi_errors,
    internal_error,
    json_response,
    parse_body,
)
from canopy_operator.core.export import render_export

feedback_log = logging.getLogger("canopy.feedback")

_WORDS = (
    "key points cover the main argument briefly while details on evidence data results methods "
    "context scope limits risks benefits costs timeline actors goals outcome trends causes effects "
    "findings summary overview claims sources impact changes growth decline policy users systems "
    "models tests quality clarity structure background conclusion next steps open questions trade "
    "offs priorities"
)
_VOCABULARY = tuple(_WORDS.split())


class PromptRequest(BaseModel):
    prompt: str


class FeedbackRequest(BaseModel):
    input_text: str
    response_text: str
    rating: str  # not validated by the backend
    feature: str = "summarize"
    comment: str | None = None


class AbFeedbackRequest(BaseModel):
    input_text: str
    response_a: str
    response_b: str
    preference: str  # not validated by the backend: "a", "b", "tie" or anything
    prompt_mapping: dict[str, str]
    feature: str = "summarize"


@dataclass
class Faults:
    """Test-only misbehaviour, all off by default and never part of the contract."""

    status: int | None = None
    """Answer every request with this status and a plain body (e.g. 500, 503)."""
    garbage: bytes | None = None
    """Answer every request with 200, ``application/json`` and these bytes."""
    delay: float = 0.0
    """Seconds to wait before answering anything."""
    stream_error: str | None = None
    """Make the model call fail: streams carry ``{"error": ...}`` events instead of deltas."""
    chunk_delay: float = 0.0
    """Seconds between two stream events."""
    drip: float = 0.0
    """Send the body of a plain (non-stream) answer in 64-byte pieces, this many seconds apart."""
    chunked: bool = False
    """Send plain bodies chunked, without Content-Length (a client cannot reject a big one up front)."""
    paths: frozenset[str] = frozenset()
    """Apply the faults above only to these paths (e.g. ``{"/feedback/ab"}``); empty means every path."""
    hits: int = 0
    """How many requests the faults were applied to so far (a test can wait for one in flight)."""

    def clear(self) -> None:
        """Heal: every fault off (``hits`` is kept)."""
        self.status = self.garbage = self.stream_error = None
        self.delay = self.chunk_delay = self.drip = 0.0
        self.chunked = False
        self.paths = frozenset()

    def active(self) -> bool:
        return bool(self.status is not None or self.garbage is not None or self.delay or self.drip)


@dataclass
class BackendState:
    """Everything one backend process holds; a restart is a new one (empty stores, ids from 1)."""

    config: BackendConfig
    rng: random.Random
    clock: Callable[[], datetime]
    faults: Faults
    feedback: list[dict[str, Any]] = field(default_factory=list)
    ab_feedback: list[dict[str, Any]] = field(default_factory=list)

    def now(self) -> str:
        """``datetime.now(timezone.utc).isoformat()`` (microseconds are dropped when they are zero)."""
        return self.clock().isoformat()


STATE_KEY = web.AppKey("canopy_state", BackendState)


def answer_chunks(system_prompt: str, text: str) -> list[str]:
    """The deterministic "model" answer for this system prompt and input, as stream deltas."""
    digest = hashlib.sha256(f"{system_prompt}\0{text}".encode("utf-8", "surrogatepass")).digest()
    count = 6 + digest[0] % 9
    words = [_VOCABULARY[byte % len(_VOCABULARY)] for byte in digest[1 : 1 + count]]
    sentence = " ".join(words).capitalize() + "."
    return re.findall(r"\s*\S+", sentence)


def build_app(state: BackendState) -> web.Application:
    """The aiohttp application of one backend process."""
    app = web.Application(middlewares=[_faults, fastapi_errors], client_max_size=256 * 1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_get("/feature-flags", feature_flags)
    app.router.add_post("/feedback", submit_feedback)
    app.router.add_get("/feedback", list_feedback)
    app.router.add_get("/feedback/export", export_feedback)
    app.router.add_post("/summarize/ab", summarize_ab)
    app.router.add_post("/feedback/ab", submit_ab_feedback)
    app.router.add_get("/feedback/ab", list_ab_feedback)
    app.router.add_post("/summarize", summarize)
    return app


def _state(request: web.Request) -> BackendState:
    return request.app[STATE_KEY]


def _log_event(event: dict[str, Any]) -> None:
    feedback_log.info(json.dumps(event))


def _feature_off(state: BackendState, *flags: str) -> web.Response | None:
    names = {"feedback": "Feedback", "ab_testing": "A/B testing", "summarize": "Summarization"}
    for flag in flags:
        if not state.config.enabled(flag):
            return detail(404, f"{names[flag]} feature is not enabled")
    return None


async def feature_flags(request: web.Request) -> web.Response:
    return json_response(dict(_state(request).config.flags))


async def submit_feedback(request: web.Request) -> web.Response:
    body = await parse_body(request, FeedbackRequest)
    state = _state(request)
    if off := _feature_off(state, "feedback"):
        return off
    entry = {
        "id": len(state.feedback) + 1,
        "timestamp": state.now(),
        "feature": body.feature,
        "rating": body.rating,
        "input_text": body.input_text,
        "response_text": body.response_text,
        "comment": body.comment,
    }
    state.feedback.append(entry)
    _log_event(
        {
            "event": "feedback_submitted",
            "feedback_id": entry["id"],
            "feature": body.feature,
            "rating": body.rating,
            "input_length": len(body.input_text),
            "response_length": len(body.response_text),
            "timestamp": entry["timestamp"],
        }
    )
    return json_response({"status": "ok", "feedback_id": entry["id"]})


async def list_feedback(request: web.Request) -> web.Response:
    state = _state(request)
    if off := _feature_off(state, "feedback"):
        return off
    return json_response({"total": len(state.feedback), "feedback": state.feedback})


async def export_feedback(request: web.Request) -> web.Response:
    state = _state(request)
    if off := _feature_off(state, "feedback"):
        return off
    negative = [entry for entry in state.feedback if entry["rating"] == "thumbs_down"]
    text = render_export([entry["input_text"] for entry in negative])
    _log_event({"event": "feedback_exported", "total_negative": len(negative), "timestamp": state.now()})
    return web.Response(
        body=text.encode("utf-8"),
        content_type="application/x-yaml",
        headers={"Content-Disposition": "attachment; filename=feedback-eval-dataset.yaml"},
    )


async def submit_ab_feedback(request: web.Request) -> web.Response:
    body = await parse_body(request, AbFeedbackRequest)
    state = _state(request)
    if off := _feature_off(state, "feedback", "ab_testing"):
        return off
    winning = body.prompt_mapping.get(body.preference) if body.preference in ("a", "b") else None
    entry = {
        "id": len(state.ab_feedback) + 1,
        "timestamp": state.now(),
        "feature": body.feature,
        "preference": body.preference,
        "winning_prompt": winning,
        "prompt_mapping": body.prompt_mapping,
        "input_text": body.input_text,
        "response_a": body.response_a,
        "response_b": body.response_b,
    }
    state.ab_feedback.append(entry)
    _log_event(
        {
            "event": "ab_feedback_submitted",
            "feedback_id": entry["id"],
            "feature": body.feature,
            "preference": body.preference,
            "winning_prompt": winning,
            "prompt_mapping": body.prompt_mapping,
            "timestamp": entry["timestamp"],
        }
    )
    return json_response({"status": "ok", "feedback_id": entry["id"]})


async def list_ab_feedback(request: web.Request) -> web.Response:
    state = _state(request)
    if off := _feature_off(state, "feedback", "ab_testing"):
        return off
    entries = state.ab_feedback
    return json_response(
        {
            "total": len(entries),
            "prompt_a_wins": sum(1 for entry in entries if entry["winning_prompt"] == "prompt"),
            "prompt_b_wins": sum(1 for entry in entries if entry["winning_prompt"] == "prompt_b"),
            "ties": sum(1 for entry in entries if entry["preference"] == "tie"),
            "entries": entries,
        }
    )


async def summarize(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, PromptRequest)
    state = _state(request)
    if off := _feature_off(state, "summarize"):
        return off
    section = state.config.summarize
    if "model" not in section:
        return internal_error()  # KeyError: 'model' before the stream starts
    system_prompt = str(section.get("prompt", DEFAULT_SUMMARIZE_PROMPT))
    if state.faults.stream_error is not None:
        events = [{"error": state.faults.stream_error}]
    else:
        events = [{"delta": chunk} for chunk in answer_chunks(system_prompt, body.prompt)]
    return await _stream(request, [_sse(event) for event in events])


async def summarize_ab(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, PromptRequest)
    state = _state(request)
    if off := _feature_off(state, "summarize", "ab_testing"):
        return off
    section = state.config.summarize
    prompt_b = section.get("prompt_b")
    if not prompt_b:
        return detail(400, "prompt_b is not configured in summarize config")
    if "model" not in section:
        return internal_error()
    prompts = [("prompt", str(section.get("prompt", DEFAULT_SUMMARIZE_PROMPT))), ("prompt_b", str(prompt_b))]
    state.rng.shuffle(prompts)
    mapping = {"a": prompts[0][0], "b": prompts[1][0]}
    lines = [_sse({"type": "ab_config", "mapping": mapping})]
    lines += [_sse(event) for event in _interleaved(state, prompts[0][1], prompts[1][1], body.prompt)]
    lines.append("data: [DONE]\n\n")
    return await _stream(request, lines)


def _interleaved(state: BackendState, prompt_a: str, prompt_b: str, text: str) -> list[dict[str, str]]:
    """Both variants' events, interleaved at random as two concurrent model calls would be."""
    if state.faults.stream_error is not None:
        return [{"variant": variant, "error": state.faults.stream_error} for variant in ("a", "b")]
    pending = {"a": answer_chunks(prompt_a, text), "b": answer_chunks(prompt_b, text)}
    events: list[dict[str, str]] = []
    while any(pending.values()):
        variant = state.rng.choice([name for name, chunks in pending.items() if chunks])
        events.append({"variant": variant, "delta": pending[variant].pop(0)})
    return events


def _sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event)}\n\n"


async def _stream(request: web.Request, lines: list[str]) -> web.StreamResponse:
    """A Starlette ``StreamingResponse`` of ``text/event-stream``: chunked, one write per event."""
    delay = _state(request).faults.chunk_delay
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    try:
        for line in lines:
            if delay:
                await asyncio.sleep(delay)
            await response.write(line.encode("utf-8"))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client hung up (e.g. a readiness probe that reads one event)
    return response


@web.middleware
async def _faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    faults = request.app[STATE_KEY].faults
    if not faults.active() or (faults.paths and request.path not in faults.paths):
        return await handler(request)
    faults.hits += 1
    if faults.delay:
        await asyncio.sleep(faults.delay)
    if faults.status is not None:
        reason = "Internal Server Error" if faults.status == 500 else "simulated failure"
        return web.Response(status=faults.status, text=reason, content_type="text/plain", charset="utf-8")
    if faults.garbage is not None:
        response: web.StreamResponse = web.Response(body=faults.garbage, content_type="application/json")
    else:
        response = await handler(request)
    slow = faults.drip or faults.chunked
    if slow and isinstance(response, web.Response) and isinstance(response.body, bytes):
        return await _pieces(request, response, faults.drip, faults.chunked)
    return response


async def _pieces(request: web.Request, response: web.Response, delay: float, chunked: bool) -> web.StreamResponse:
    """The same answer sent in pieces: 64 bytes each ``delay`` seconds (a slow drip), or 1 MiB chunks."""
    body = response.body
    assert isinstance(body, bytes)
    size = 64 if delay else 1024 * 1024
    slow = web.StreamResponse(status=response.status, headers={"Content-Type": response.content_type})
    if chunked:
        slow.enable_chunked_encoding()
    else:
        slow.content_length = len(body)
    await slow.prepare(request)
    try:
        for start in range(0, len(body), size):
            if delay:
                await asyncio.sleep(delay)
            await slow.write(body[start : start + size])
        await slow.write_eof()
    except ConnectionResetError:
        pass  # the client gave up, as it should
    return slow
