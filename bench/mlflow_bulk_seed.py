# mypy: ignore-errors
# (This script runs in the MLflow virtualenv built by hack/servers-assets.sh, never in the project's: mypy of
# the project cannot see the mlflow package, so it is not type-checked.)
"""Seed many A/B votes into a running MLflow server fast, with exactly the data of the Generation 2 backend.

Run with the MLflow env's Python (``-I``), from the benchmark ``bench/mlflow_poll.py``; reads a JSON plan on
stdin, writes one JSON object on stdout:

    {"tracking_uri": "http://127.0.0.1:PORT",           # the server: the experiment is created through it
     "store_uri": "sqlite:////tmp/canopy-mlflow-x/mlflow.db",   # the server's own backend store
     "experiment": "canopy-backend", "seed": 1,
     "groups": [{"challenger": 700, "champion": 300, "start_time_ms": 1795996800000, "spacing_ms": 20}, ...]}
    -> {"experiment_id": "1", "groups": [{"challenger", "champion", "first_timestamp_ms", "last_timestamp_ms"}, ...],
        "traces": 2000, "assessments": 2000, "seconds": 65.4}

What one vote is (the same calls as ``tests/support/gen2_seed_mlflow.py``'s ``ab_vote`` step, which copies the
backend): an A/B request, two traced summarizations ``summarization_ab_a`` / ``summarization_ab_b`` (a CHAIN
root with inputs ``{"text": ...}`` and outputs ``{"summary": ...}``, a CHAT_MODEL child), then the backend's
``POST /feedback/ab``: ``mlflow.log_feedback(name="ab_preference")`` True on the preferred trace with
"User preferred this response (mapped to <arm>)", False on the other with "User preferred the alternative
response (mapped to <arm>)", source HUMAN/canopy_user. A group holds exactly ``challenger`` votes won by the
challenger and ``champion`` won by the champion, in an order drawn at random (``seed``), as is the screen position
of the champion in each vote (unless the group sets ``champion_position``, ``a`` or ``b``). Trace ``a`` of a
group's vote ``i`` starts at ``start_time_ms + i * spacing_ms``, ``b`` 10 ms later (back-dated like the seeder's
``start_time_ms``: child span +1..+2 ms, root ends +3 ms).

Why it is fast and still the same data: the seeder writes through the REST API (one HTTP round trip per span
batch, trace and assessment, plus a read-back per trace); this script runs the very same MLflow client code
(``mlflow.start_span_no_context``, the V3 exporter, ``mlflow.log_feedback``) with the tracking URI pointed at
the server's SQLite file, so the exporter calls the same ``SqlAlchemyStore.log_spans`` / ``start_trace`` /
``create_assessment`` the server's handlers call, in-process. Only the experiment is created through the
server (its artifact location, ``mlflow-artifacts:/<id>``, is the server's). ``PRAGMA synchronous=OFF`` on this
process's connections skips the fsync of each commit (speed only: the rows are the same). What a search returns
differs from the seeder's traces only where the writing program shows: ``mlflow.source.name`` (this script's
path instead of the seeder's) and so ``mlflow.trace.sizeBytes`` / ``sizeStats``; ids and times are new ones.

The exporter only logs a failed write (as it does in the backend), so any warning or error MLflow logs here
fails the run, and a feedback on a trace that was not stored raises. Nothing else may write to the server's
database meanwhile (SQLite takes one writer at a time).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time

os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# The environment above must be set before mlflow is imported.
import mlflow
from mlflow.entities import AssessmentSource, SpanType
from mlflow.tracing.provider import detach_span_from_context, set_span_in_context
from sqlalchemy import event
from sqlalchemy.engine import Engine

HUMAN = AssessmentSource(source_type="HUMAN", source_id="canopy_user")
TEXT = "Text to summarize."
SUMMARY = "A summary."


@event.listens_for(Engine, "connect")
def _no_fsync(dbapi_connection, _record):
    """Speed only: commits are not fsynced (a crash could lose them; nothing here survives a crash anyway)."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()


def _trace(name, start_ms):
    """One traced summarization shaped like the backend's (as gen2_seed_mlflow.py's ``_summarize_trace``)."""
    start_ns = int(start_ms) * 1_000_000
    root = mlflow.start_span_no_context(
        name=name, span_type=SpanType.CHAIN, inputs={"text": TEXT}, start_time_ns=start_ns
    )
    token = set_span_in_context(root)
    try:
        child = mlflow.start_span_no_context(
            name="ChatCompletion",
            span_type=SpanType.CHAT_MODEL,
            parent_span=root,
            inputs={"messages": [{"role": "user", "content": TEXT}]},
            start_time_ns=start_ns + 1_000_000,
        )
        child.set_outputs({"choices": [{"message": {"role": "assistant", "content": SUMMARY}}]})
        child.end(end_time_ns=start_ns + 2_000_000)
    finally:
        detach_span_from_context(token)
    root.set_outputs({"summary": SUMMARY})
    root.end(end_time_ns=start_ns + 3_000_000)
    return root.trace_id


def _vote(rng, winner, start_ms, champion_at=None):
    """One A/B request and the backend's ``POST /feedback/ab`` for it; the preferred answer's arm is ``winner``."""
    champion_at = champion_at or rng.choice("ab")
    mapping = {champion_at: "champion", ("b" if champion_at == "a" else "a"): "challenger"}
    traces = {"a": _trace("summarization_ab_a", start_ms), "b": _trace("summarization_ab_b", start_ms + 10)}
    won = next(p for p, arm in mapping.items() if arm == winner)
    lost = "b" if won == "a" else "a"
    mlflow.log_feedback(
        trace_id=traces[won],
        name="ab_preference",
        value=True,
        rationale=f"User preferred this response (mapped to {mapping[won]})",
        source=HUMAN,
    )
    mlflow.log_feedback(
        trace_id=traces[lost],
        name="ab_preference",
        value=False,
        rationale=f"User preferred the alternative response (mapped to {mapping[lost]})",
        source=HUMAN,
    )


class _Problems(logging.Handler):
    """Counts MLflow's warnings and errors (a write the exporter failed and only logged)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(f"{record.name}: {record.getMessage()}"[:500])


def run(plan):
    problems = _Problems()
    logging.getLogger("mlflow").addHandler(problems)
    mlflow.set_tracking_uri(plan["tracking_uri"])
    experiment = mlflow.set_experiment(plan.get("experiment", "canopy-backend"))
    mlflow.set_tracking_uri(plan["store_uri"])
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    rng = random.Random(plan.get("seed", 1))
    started = time.monotonic()
    out = []
    votes = 0
    for group in plan["groups"]:
        winners = ["challenger"] * int(group.get("challenger", 0)) + ["champion"] * int(group.get("champion", 0))
        rng.shuffle(winners)
        spacing = int(group.get("spacing_ms", 20))
        if spacing < 11:
            raise SystemExit("spacing_ms must leave room for trace b (10 ms after a)")
        first = int(group["start_time_ms"])
        for i, winner in enumerate(winners):
            _vote(rng, winner, first + i * spacing, group.get("champion_position"))
            votes += 1
            if votes % 1000 == 0:
                print(f"bulk seed: {votes} votes in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        out.append(
            {
                "challenger": winners.count("challenger"),
                "champion": winners.count("champion"),
                "first_timestamp_ms": first,
                "last_timestamp_ms": first + (len(winners) - 1) * spacing + 10,
            }
        )
    if problems.messages:
        raise SystemExit(f"MLflow logged {len(problems.messages)} problems, first: {problems.messages[0]}")
    return {
        "experiment_id": experiment.experiment_id,
        "groups": out,
        "traces": 2 * votes,
        "assessments": 2 * votes,
        "seconds": round(time.monotonic() - started, 3),
    }


if __name__ == "__main__":
    stdout = sys.stdout
    sys.stdout = sys.stderr  # anything mlflow prints goes to stderr; stdout carries only the result
    json.dump(run(json.load(sys.stdin)), stdout)
    stdout.write("\n")
    stdout.flush()
