"""The Generation 2 stand-in: one process's state and its endpoints (aiohttp), writing to a real MLflow.

What the course's Generation 2 backend does (``../shared/vote-sources.md``), on the Generation 1 simulator's
wire behaviour (FastAPI's bodies and errors, :mod:`canopy_devkit.simulator.http`):

- ``GET /feature-flags`` -> ``{"summarization", "feedback", "ab_testing"}`` booleans. The course material does
  not show the Generation 2 backend's probe; it is assumed to be Generation 1's ``/feature-flags`` (the operator
  compares ``feedback`` and ``ab_testing`` there).
- ``POST /summarize`` and ``POST /summarize/ab`` (body ``{"prompt": text}``) stream exactly as Generation 1
  (contract 1.1), so the operator's A/B probe works: a disabled ``summarization`` is a 404, ``ab_testing`` off or
  without ``mlflow_prompt_b_version`` the 400 ``"prompt_b is not configured in summarize config"``. The prompts
  come from the MLflow prompt registry, through the alias cache (:mod:`.prompts`): the champion is
  ``summarization.mlflow_prompt`` at ``summarization.mlflow_prompt_version``, the challenger at
  ``ab_testing.mlflow_prompt_b_version``. The ``ab_config`` mapping still names them ``prompt`` / ``prompt_b``.
  Answers are a hash of the prompt text and the input (:func:`canopy_devkit.simulator.answer_chunks`), so a test
  can tell which version answered.
- Every answer is an MLflow trace, exported before the stream starts (the real backend exports when the trace
  ends, asynchronously; exporting first means a client's vote never races the export): ``summarization``, or one
  ``summarization_ab_a`` / ``summarization_ab_b`` per screen position, with request preview ``{"text": ...}`` and
  response preview ``{"summary": ...}`` and nothing naming the arm or the version. The real backend gives the UI
  the trace ids; the stand-in's way is an extra key of the ``ab_config`` event, ``"trace_ids": {"a": ..., "b":
  ...}`` (the operator's parser ignores extra keys), and the ``X-Trace-Id`` header of ``/summarize``. A failed
  export is logged and the answer still served, as an asynchronous export would.
- ``POST /feedback {trace_id, rating, feature, comment}`` -> ``user_satisfaction`` = ``rating == "thumbs_up"``,
  rationale = the comment; ``POST /feedback/ab {trace_id_a, trace_id_b, preference, prompt_mapping, feature}`` ->
  two ``ab_preference`` assessments, ``True`` on the preferred answer's trace ("User preferred this response
  (mapped to <arm>)") and ``False`` on the other ("User preferred the alternative response (mapped to <arm>)");
  ``<arm>`` is ``prompt_mapping[<side>]`` when that is ``champion`` or ``challenger``, else ``unknown`` (the winner's
  side read from the raw ``preference``, as the backend does, so a ``tie`` is a ``b`` win mapped to ``unknown``).
  Any preference other than ``"a"`` counts as ``"b"``. Source ``HUMAN`` / ``canopy_user``. A trace MLflow does
  not know yet is retried (bounded), as the backend does. Both answer ``{"status": "ok"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from canopy_devkit.gen2.config import FLAG_NAMES, Gen2Config
from canopy_devkit.gen2.mlflow_api import MlflowApi, MlflowError, PromptVersion, TraceRecord, new_trace_id
from canopy_devkit.gen2.prompts import PromptResolver
from canopy_devkit.simulator.app import answer_chunks
from canopy_devkit.simulator.http import detail, fastapi_errors, json_response, parse_body

feedback_log = logging.getLogger("canopy.feedback")
log = logging.getLogger(__name__)

PROMPT_B_MISSING = "prompt_b is not configured in summarize config"
AB_PREFERENCE = "ab_preference"
USER_SATISFACTION = "user_satisfaction"
KNOWN_ARMS = ("champion", "challenger")
TRACE_HEADER = "X-Trace-Id"
_T = TypeVar("_T")


class PromptRequest(BaseModel):
    prompt: str


class FeedbackRequest(BaseModel):
    trace_id: str
    rating: str  # not validated: anything but "thumbs_up" is a thumbs-down
    feature: str = "summarization"
    comment: str | None = None


class AbFeedbackRequest(BaseModel):
    trace_id_a: str
    trace_id_b: str
    preference: str  # not validated: anything but "a" counts as "b"
    prompt_mapping: dict[str, str]
    feature: str = "summarization"


@dataclass
class Gen2State:
    """Everything one process holds; a restart is a new one (an empty alias cache)."""

    config: Gen2Config
    rng: random.Random
    clock: Callable[[], datetime]
    mlflow: MlflowApi
    prompts: PromptResolver
    experiment_id: str
    retries: int = 25
    """Attempts of an assessment on a trace MLflow does not know yet."""
    retry_delay: float = 0.2


STATE_KEY = web.AppKey("canopy_gen2_state", Gen2State)


def build_app(state: Gen2State) -> web.Application:
    """The aiohttp application of one stand-in process."""
    app = web.Application(middlewares=[fastapi_errors], client_max_size=16 * 1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_get("/feature-flags", feature_flags)
    app.router.add_post("/summarize", summarize)
    app.router.add_post("/summarize/ab", summarize_ab)
    app.router.add_post("/feedback", submit_feedback)
    app.router.add_post("/feedback/ab", submit_ab_feedback)
    return app


def _state(request: web.Request) -> Gen2State:
    return request.app[STATE_KEY]


def _feature_off(state: Gen2State, *flags: str) -> web.Response | None:
    names = {"feedback": "Feedback", "ab_testing": "A/B testing", "summarization": "Summarization"}
    for flag in flags:
        if not state.config.enabled(flag):
            return detail(404, f"{names[flag]} feature is not enabled")
    return None


def flags_of(config: Gen2Config) -> dict[str, bool]:
    """The ``/feature-flags`` answer for this config."""
    return {name: config.enabled(name) for name in FLAG_NAMES}


async def feature_flags(request: web.Request) -> web.Response:
    state = _state(request)
    return json_response(flags_of(state.config))


async def summarize(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, PromptRequest)
    state = _state(request)
    if off := _feature_off(state, "summarization"):
        return off
    started = state.clock()
    champion = await state.prompts.resolve(state.config.prompt_name, state.config.champion_ref)
    chunks = answer_chunks(champion.text, body.prompt)
    trace = TraceRecord("summarization", *_previews(body.prompt, chunks), started, new_trace_id())
    await _export(state, trace)
    events = [_sse({"delta": chunk}) for chunk in chunks]
    return await _stream(request, events, {TRACE_HEADER: trace.trace_id})


async def summarize_ab(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, PromptRequest)
    state = _state(request)
    if off := _feature_off(state, "summarization"):
        return off
    challenger_ref = state.config.challenger_ref
    if not state.config.enabled("ab_testing") or challenger_ref is None:
        return detail(400, PROMPT_B_MISSING)
    started = state.clock()
    name = state.config.prompt_name
    champion = await state.prompts.resolve(name, state.config.champion_ref)
    challenger = await state.prompts.resolve(name, challenger_ref)
    arms: list[tuple[str, PromptVersion]] = [("prompt", champion), ("prompt_b", challenger)]
    state.rng.shuffle(arms)
    chunks = {side: answer_chunks(version.text, body.prompt) for side, (_, version) in zip("ab", arms, strict=True)}
    traces = {
        side: TraceRecord(f"summarization_ab_{side}", *_previews(body.prompt, chunks[side]), started, new_trace_id())
        for side in "ab"
    }
    await asyncio.gather(*(_export(state, trace) for trace in traces.values()))
    trace_ids = {side: trace.trace_id for side, trace in traces.items()}
    mapping = {"a": arms[0][0], "b": arms[1][0]}
    lines = [_sse({"type": "ab_config", "mapping": mapping, "trace_ids": trace_ids})]
    lines += [_sse(event) for event in _interleaved(state.rng, chunks)]
    lines.append("data: [DONE]\n\n")
    return await _stream(request, lines)


async def submit_feedback(request: web.Request) -> web.Response:
    body = await parse_body(request, FeedbackRequest)
    state = _state(request)
    if off := _feature_off(state, "feedback"):
        return off
    value = body.rating == "thumbs_up"
    now = state.clock()
    await _retrying(
        state,
        lambda: state.mlflow.log_feedback(body.trace_id, USER_SATISFACTION, value, rationale=body.comment, now=now),
    )
    _log_event(
        {
            "event": "feedback_submitted",
            "trace_id": body.trace_id,
            "feature": body.feature,
            "rating": body.rating,
            "timestamp": now.isoformat(),
        }
    )
    return json_response({"status": "ok"})


def _arm(mapping: dict[str, str], side: str) -> str:
    arm = mapping.get(side)
    return arm if arm in KNOWN_ARMS else "unknown"


async def submit_ab_feedback(request: web.Request) -> web.Response:
    body = await parse_body(request, AbFeedbackRequest)
    state = _state(request)
    if off := _feature_off(state, "feedback", "ab_testing"):
        return off
    winner_side = "a" if body.preference == "a" else "b"
    loser_side = "b" if winner_side == "a" else "a"
    traces = {"a": body.trace_id_a, "b": body.trace_id_b}
    winner_arm, loser_arm = _arm(body.prompt_mapping, body.preference), _arm(body.prompt_mapping, loser_side)
    now = state.clock()
    await _retrying(
        state,
        lambda: state.mlflow.log_feedback(
            traces[winner_side],
            AB_PREFERENCE,
            True,
            rationale=f"User preferred this response (mapped to {winner_arm})",
            now=now,
        ),
    )
    await _retrying(
        state,
        lambda: state.mlflow.log_feedback(
            traces[loser_side],
            AB_PREFERENCE,
            False,
            rationale=f"User preferred the alternative response (mapped to {loser_arm})",
            now=now,
        ),
    )
    _log_event(
        {
            "event": "ab_feedback_submitted",
            "feature": body.feature,
            "preference": body.preference,
            "winning_arm": winner_arm,
            "prompt_mapping": body.prompt_mapping,
            "trace_id_a": body.trace_id_a,
            "trace_id_b": body.trace_id_b,
            "timestamp": now.isoformat(),
        }
    )
    return json_response({"status": "ok"})


# ---- plumbing -------------------------------------------------------------------------------------------------


def _previews(text: str, chunks: list[str]) -> tuple[str, str]:
    return json.dumps({"text": text}), json.dumps({"summary": "".join(chunks)})


async def _export(state: Gen2State, trace: TraceRecord) -> None:
    try:
        await state.mlflow.start_trace(state.experiment_id, trace)
    except MlflowError as exc:
        log.warning("trace %s not exported: %s", trace.trace_id, exc)


async def _retrying(state: Gen2State, call: Callable[[], Awaitable[_T]]) -> _T:
    """``call``, again while MLflow does not know the trace yet (bounded); any other error is raised."""
    for attempt in range(1, state.retries + 1):
        try:
            return await call()
        except MlflowError as exc:
            if not exc.missing or attempt == state.retries:
                raise
        await asyncio.sleep(state.retry_delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _log_event(event: dict[str, Any]) -> None:
    feedback_log.info(json.dumps(event))


def _interleaved(rng: random.Random, chunks: dict[str, list[str]]) -> list[dict[str, str]]:
    """Both variants' deltas, interleaved at random as two concurrent model calls would be."""
    pending = {side: list(parts) for side, parts in chunks.items()}
    events: list[dict[str, str]] = []
    while any(pending.values()):
        side = rng.choice([name for name, parts in pending.items() if parts])
        events.append({"variant": side, "delta": pending[side].pop(0)})
    return events


def _sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event)}\n\n"


async def _stream(request: web.Request, lines: list[str], headers: dict[str, str] | None = None) -> web.StreamResponse:
    """A Starlette ``StreamingResponse`` of ``text/event-stream``: chunked, one write per event."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **(headers or {})})
    await response.prepare(request)
    try:
        for line in lines:
            await response.write(line.encode("utf-8"))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client hung up (e.g. a readiness probe that reads one event)
    return response
