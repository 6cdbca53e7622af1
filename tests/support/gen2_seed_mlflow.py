# mypy: ignore-errors
# (This script runs in the MLflow virtualenv built by hack/servers-assets.sh, never in the project's: mypy of
# the project cannot see the mlflow package, so it is not type-checked.)
"""Seed a real MLflow server exactly the way the course's Generation 2 Canopy backend writes to it.

Run with the MLflow env's Python; reads a JSON plan on stdin, writes one JSON object on stdout:

    {"tracking_uri": "http://127.0.0.1:PORT", "experiment": "canopy-backend", "steps": [STEP, ...]}
    -> {"experiment_id": "1", "steps": [RESULT, ...]}   (one RESULT per STEP, in order)

Steps (``op``):
- ``register_prompt {name, template, commit_message?, tags?, alias?}`` -> ``{name, version, uri}``
  (``mlflow.genai.register_prompt``; ``alias`` then points at the new version).
- ``set_alias {name, alias, version}`` / ``delete_alias {name, alias}`` -> ``{name, alias, version?}``.
- ``ab_request {prompts?: {a, b}, load_prompts_in_trace?: false, start_time_ms?}`` -> ``{trace_id_a,
  trace_id_b, timestamp_ms_a, timestamp_ms_b}``: the backend's A/B summarization, two traces named
  ``summarization_ab_a`` / ``summarization_ab_b`` (screen position, not arm; no tag naming the arm).
  ``prompts`` are ``prompts:/...`` URIs, loaded inside the trace only with ``load_prompts_in_trace``
  (then the trace is linked to the prompt version). ``start_time_ms`` back-dates the traces.
- ``ab_feedback {trace_id_a, trace_id_b | request: STEP_INDEX, preference, prompt_mapping, source?}`` ->
  ``{winner_trace_id, loser_trace_id, winner_arm, loser_arm, assessment_ids}``: the backend's
  ``POST /feedback/ab`` handler, two ``ab_preference`` assessments (True on the winner, False on the loser).
- ``ab_vote {...ab_request, ...ab_feedback}``: both in one step (results merged).
- ``summarize {prompt?, load_prompts_in_trace?, start_time_ms?}`` -> ``{trace_id, timestamp_ms}``: a plain
  ``summarization`` trace.
- ``thumbs {trace_id | request: STEP_INDEX [position: a|b], rating, comment?, source?}`` -> ``{trace_id, value,
  assessment_id}``: the backend's ``POST /feedback`` handler (``user_satisfaction``).
- ``assessment {trace_id | request: STEP_INDEX [position: a|b], name, value, rationale?, source?}`` ->
  ``{trace_id, assessment_id}``:
  any other ``log_feedback`` (e.g. an ``LLM_JUDGE`` vote that must not count).

``source`` is ``{"type": "HUMAN", "id": "canopy_user"}`` unless given. Trace export is synchronous
(``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false``) and each trace is read back before it is used, so a seeded
trace is searchable as soon as the script returns.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# The environment above must be set before mlflow is imported.
import mlflow
import mlflow.genai
from mlflow.entities import AssessmentSource, SpanType
from mlflow.tracing.provider import detach_span_from_context, set_span_in_context

VISIBLE_TIMEOUT = 30.0
KNOWN_ARMS = ("champion", "challenger")
HUMAN = {"type": "HUMAN", "id": "canopy_user"}


def _source(spec):
    spec = spec or HUMAN
    return AssessmentSource(source_type=spec["type"], source_id=spec["id"])


def _wait_visible(trace_id):
    """Bounded wait until the server returns the trace (log_feedback needs it to exist)."""
    deadline = time.monotonic() + VISIBLE_TIMEOUT
    while True:
        try:
            trace = mlflow.get_trace(trace_id)
        except Exception:  # the server answers RESOURCE_DOES_NOT_EXIST until the export lands
            trace = None
        if trace is not None:
            return trace
        if time.monotonic() > deadline:
            raise SystemExit(f"trace {trace_id} not visible on the server after {VISIBLE_TIMEOUT}s")
        time.sleep(0.2)


def _summarize_trace(name, prompt_uri, load_in_trace, start_time_ms, text):
    """One traced summarization, shaped like the backend's: a CHAIN root with a CHAT_MODEL child."""
    start_ns = None if start_time_ms is None else int(start_time_ms) * 1_000_000
    if prompt_uri and not load_in_trace:
        mlflow.genai.load_prompt(prompt_uri)  # loaded per request, outside the trace
    # start_span_no_context + set_span_in_context is what `with mlflow.start_span()` does, except that the
    # start time can be set (to back-date a trace).
    root = mlflow.start_span_no_context(
        name=name, span_type=SpanType.CHAIN, inputs={"text": text}, start_time_ns=start_ns
    )
    token = set_span_in_context(root)
    try:
        if prompt_uri and load_in_trace:
            mlflow.genai.load_prompt(prompt_uri)  # inside the trace: links the prompt version to it
        child = mlflow.start_span_no_context(
            name="ChatCompletion",
            span_type=SpanType.CHAT_MODEL,
            parent_span=root,
            inputs={"messages": [{"role": "user", "content": text}]},
            start_time_ns=None if start_ns is None else start_ns + 1_000_000,
        )
        child.set_outputs({"choices": [{"message": {"role": "assistant", "content": "A summary."}}]})
        child.end(end_time_ns=None if start_ns is None else start_ns + 2_000_000)
    finally:
        detach_span_from_context(token)
    root.set_outputs({"summary": "A summary."})
    root.end(end_time_ns=None if start_ns is None else start_ns + 3_000_000)
    trace = _wait_visible(root.trace_id)
    return root.trace_id, trace.info.request_time


def _arm(mapping, key):
    arm = mapping.get(key)
    return arm if arm in KNOWN_ARMS else "unknown"


def _pair(step, results):
    """(trace_id_a, trace_id_b) of an A/B request: given, or the result of step ``request``."""
    source = results[step["request"]] if "request" in step else step
    return source["trace_id_a"], source["trace_id_b"]


def _one(step, results):
    """One trace: ``trace_id``, or the ``request`` step's trace (``position`` a/b of an A/B request)."""
    if "trace_id" in step:
        return step["trace_id"]
    earlier = results[step["request"]]
    if "position" in step:
        return earlier[f"trace_id_{step['position']}"]
    return earlier.get("trace_id", earlier.get("trace_id_a"))


def ab_request(step):
    prompts = step.get("prompts") or {}
    load = bool(step.get("load_prompts_in_trace", False))
    start = step.get("start_time_ms")
    out = {}
    for position in ("a", "b"):
        trace_id, ts = _summarize_trace(
            f"summarization_ab_{position}",
            prompts.get(position),
            load,
            None if start is None else start + (0 if position == "a" else 10),
            step.get("text", "Text to summarize."),
        )
        out[f"trace_id_{position}"] = trace_id
        out[f"timestamp_ms_{position}"] = ts
    return out


def ab_feedback(step, results):
    """The backend's POST /feedback/ab: any preference other than "a" counts as "b" (no ties)."""
    trace_a, trace_b = _pair(step, results)
    preference = step["preference"]
    mapping = step.get("prompt_mapping") or {}
    winner_pos = "a" if preference == "a" else "b"
    loser_pos = "b" if winner_pos == "a" else "a"
    winner, loser = (trace_a, trace_b) if winner_pos == "a" else (trace_b, trace_a)
    winner_arm, loser_arm = _arm(mapping, preference), _arm(mapping, loser_pos)
    source = _source(step.get("source"))
    won = mlflow.log_feedback(
        trace_id=winner,
        name="ab_preference",
        value=True,
        rationale=f"User preferred this response (mapped to {winner_arm})",
        source=source,
    )
    lost = mlflow.log_feedback(
        trace_id=loser,
        name="ab_preference",
        value=False,
        rationale=f"User preferred the alternative response (mapped to {loser_arm})",
        source=source,
    )
    return {
        "winner_trace_id": winner,
        "loser_trace_id": loser,
        "winner_arm": winner_arm,
        "loser_arm": loser_arm,
        "assessment_ids": [won.assessment_id, lost.assessment_id],
    }


def summarize(step):
    trace_id, ts = _summarize_trace(
        "summarization",
        step.get("prompt"),
        bool(step.get("load_prompts_in_trace", False)),
        step.get("start_time_ms"),
        step.get("text", "Text to summarize."),
    )
    return {"trace_id": trace_id, "timestamp_ms": ts}


def thumbs(step, results):
    """The backend's POST /feedback: value = (rating == "thumbs_up"), rationale = the comment."""
    trace_id = _one(step, results)
    value = step["rating"] == "thumbs_up"
    fb = mlflow.log_feedback(
        trace_id=trace_id,
        name="user_satisfaction",
        value=value,
        rationale=step.get("comment"),
        source=_source(step.get("source")),
    )
    return {"trace_id": trace_id, "value": value, "assessment_id": fb.assessment_id}


def assessment(step, results):
    trace_id = _one(step, results)
    fb = mlflow.log_feedback(
        trace_id=trace_id,
        name=step["name"],
        value=step["value"],
        rationale=step.get("rationale"),
        source=_source(step.get("source")),
    )
    return {"trace_id": trace_id, "assessment_id": fb.assessment_id}


def register_prompt(step):
    pv = mlflow.genai.register_prompt(
        name=step["name"],
        template=step["template"],
        commit_message=step.get("commit_message"),
        tags=step.get("tags"),
    )
    if step.get("alias"):
        mlflow.genai.set_prompt_alias(step["name"], alias=step["alias"], version=pv.version)
    return {"name": pv.name, "version": int(pv.version), "uri": f"prompts:/{pv.name}/{pv.version}"}


def run(plan):
    mlflow.set_tracking_uri(plan["tracking_uri"])
    experiment = mlflow.set_experiment(plan.get("experiment", "canopy-backend"))
    results = []
    for step in plan["steps"]:
        op = step["op"]
        if op == "register_prompt":
            result = register_prompt(step)
        elif op == "set_alias":
            mlflow.genai.set_prompt_alias(step["name"], alias=step["alias"], version=int(step["version"]))
            result = {"name": step["name"], "alias": step["alias"], "version": int(step["version"])}
        elif op == "delete_alias":
            mlflow.genai.delete_prompt_alias(step["name"], alias=step["alias"])
            result = {"name": step["name"], "alias": step["alias"]}
        elif op == "ab_request":
            result = ab_request(step)
        elif op == "ab_feedback":
            result = ab_feedback(step, results)
        elif op == "ab_vote":
            result = ab_request(step)
            result.update(ab_feedback({**step, **result}, results))
        elif op == "summarize":
            result = summarize(step)
        elif op == "thumbs":
            result = thumbs(step, results)
        elif op == "assessment":
            result = assessment(step, results)
        else:
            raise SystemExit(f"unknown op {op!r}")
        results.append(result)
    return {"experiment_id": experiment.experiment_id, "steps": results}


if __name__ == "__main__":
    out = sys.stdout
    sys.stdout = sys.stderr  # anything mlflow prints goes to stderr; stdout carries only the result
    json.dump(run(json.load(sys.stdin)), out)
    out.write("\n")
