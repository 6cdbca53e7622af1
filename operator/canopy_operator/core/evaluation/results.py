"""Reading evaluation Jobs back: the runner's termination message, the Job's state, runs in status.

The runner writes a small JSON summary to ``/dev/termination-log``; :func:`parse_job_result` turns the Job
and that message into an :class:`EvalOutcome`, and the run functions record it in status (including Jobs
whose creation the status never recorded: a crash between the create and the status write).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from canopy_operator.api.status import EVALUATION_HISTORY_LIMIT, EvaluationRun, PromptExperimentStatus
from canopy_operator.core.evaluation.jobs import (
    ANNOTATION_CASES,
    ANNOTATION_DATASET,
    ANNOTATION_NEGATIVES_SEEN,
    ANNOTATION_RUN_REQUEST,
    ANNOTATION_TEST_ID,
    ANNOTATION_TRIGGER,
)
from canopy_operator.core.evaluation.trigger import Trigger

JobState = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class EvalSummary:
    """The fields of the runner's summary the operator uses (unknown or malformed fields are None)."""

    cases: int
    scored: int | None = None
    errors: int | None = None
    challenger_better_rate: float | None = None
    threshold: float | None = None
    passed: bool | None = None
    unreviewed: int | None = None


@dataclass(frozen=True)
class EvalOutcome:
    """What an evaluation Job amounts to."""

    state: JobState
    reason: str
    """Complete, DeadlineExceeded, BackoffLimitExceeded, ... or Running."""
    message: str
    finished_at: datetime | None = None
    summary: EvalSummary | None = None

    @property
    def passed(self) -> bool | None:
        """The verdict, only for a Job that succeeded with a readable summary."""
        if self.state != "Succeeded" or self.summary is None:
            return None
        return self.summary.passed


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _true_condition(job: Mapping[str, Any], types: Sequence[str]) -> Mapping[str, Any] | None:
    status = job.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return None
    for cond in conditions:
        if isinstance(cond, Mapping) and cond.get("type") in types and cond.get("status") == "True":
            return cond
    return None


def job_state(job: Mapping[str, Any]) -> tuple[JobState, Mapping[str, Any] | None]:
    """Succeeded (Complete), Failed (Failed or FailureTarget) or Running, with the deciding condition."""
    failed = _true_condition(job, ("Failed", "FailureTarget"))
    if failed is not None:
        return "Failed", failed
    complete = _true_condition(job, ("Complete",))
    if complete is not None:
        return "Succeeded", complete
    return "Running", None


def _count(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _fraction(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def _json_objects(termination_message: str | None) -> list[dict[str, Any]]:
    """JSON objects in the message, last first: the whole message, then each line from the end (with
    FallbackToLogsOnError the message may be the runner's last log lines)."""
    if not termination_message:
        return []
    objects = []
    for text in [termination_message, *reversed(termination_message.strip().splitlines())]:
        try:
            raw = json.loads(text)
        except ValueError:
            continue
        if isinstance(raw, dict):
            objects.append(raw)
    return objects


def parse_summary(termination_message: str | None) -> EvalSummary | None:
    """The runner's summary: the last JSON object with an integer ``cases`` >= 0; garbage gives None."""
    for raw in _json_objects(termination_message):
        cases = _count(raw, "cases")
        if cases is None:
            continue
        passed = raw.get("passed")
        return EvalSummary(
            cases=cases,
            scored=_count(raw, "scored"),
            errors=_count(raw, "errors"),
            challenger_better_rate=_fraction(raw, "challenger_better_rate"),
            threshold=_fraction(raw, "threshold"),
            passed=passed if isinstance(passed, bool) else None,
            unreviewed=_count(raw, "unreviewed"),
        )
    return None


def parse_runner_error(termination_message: str | None) -> str | None:
    """The runner's own error (``{"error": ...}``, e.g. an unusable dataset), one line, at most 300 chars."""
    for raw in _json_objects(termination_message):
        error = raw.get("error")
        if isinstance(error, str) and error.strip():
            return " ".join(error.split())[:300]
    return None


def _describe(summary: EvalSummary) -> str:
    parts = [f"{summary.scored if summary.scored is not None else '?'}/{summary.cases} cases scored"]
    if summary.errors:
        parts.append(f"{summary.errors} errors")
    if summary.unreviewed:
        parts.append(f"{summary.unreviewed} unreviewed")
    if summary.challenger_better_rate is not None:
        rate = f"challenger better in {summary.challenger_better_rate:.0%}"
        if summary.threshold is not None:
            rate += f" (threshold {summary.threshold:.0%})"
        parts.append(rate)
    if summary.passed is not None:
        parts.append("passed" if summary.passed else "not passed")
    return ", ".join(parts)


def parse_job_result(job: Mapping[str, Any], termination_message: str | None) -> EvalOutcome:
    """Read an evaluation Job and its pod's termination message."""
    state, condition = job_state(job)
    summary = parse_summary(termination_message)
    if state == "Running":
        return EvalOutcome(state="Running", reason="Running", message="evaluation running", summary=summary)
    assert condition is not None  # a finished state always comes with its condition
    status = job.get("status")
    finished = _parse_time(condition.get("lastTransitionTime"))
    if finished is None and isinstance(status, Mapping):
        finished = _parse_time(status.get("completionTime"))
    reason = str(condition.get("reason") or ("Complete" if state == "Succeeded" else "Failed"))
    if state == "Failed":
        detail = str(condition.get("message") or "").strip()
        message = f"{reason}: {detail}" if detail else reason
        runner_error = parse_runner_error(termination_message)
        if runner_error is not None:
            message += f"; runner: {runner_error}"
        elif summary is not None:
            message += f" ({_describe(summary)})"
    elif summary is None:
        message = "finished without a readable summary"
    else:
        message = _describe(summary)
    return EvalOutcome(state=state, reason=reason, message=message, finished_at=finished, summary=summary)


_TRIGGERS: tuple[Trigger, ...] = ("request", "gate", "negatives")


def record_start(
    status: PromptExperimentStatus, run: EvaluationRun, seen: int, run_request: str | None
) -> PromptExperimentStatus:
    """Status after an evaluation started (or was adopted): the run, the counter reset, the request handled."""
    runs = [r for r in status.evaluations if r.name != run.name] + [run]
    negatives = status.negatives.model_copy(
        update={
            "at_last_evaluation": seen,
            "since_last_evaluation": max(0, status.negatives.total - seen),
        }
    )
    update: dict[str, object] = {"evaluations": runs[-EVALUATION_HISTORY_LIMIT:], "negatives": negatives}
    if run.trigger == "request" and run_request is not None:
        update["last_run_request"] = run_request
    return status.model_copy(update=update)


def _int(value: object, default: int = 0) -> int:
    try:
        return max(0, int(str(value)))
    except ValueError:
        return default


def _created(job: Mapping[str, Any]) -> datetime | None:
    created = (job.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(created.replace("Z", "+00:00")) if isinstance(created, str) else None
    except ValueError:
        return None


def unrecorded_jobs(status: PromptExperimentStatus, jobs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Jobs missing from status that started after every recorded run, oldest first: created by a pass whose
    status write was lost. Older unknown Jobs are history that fell out of the bounded list; they stay out."""
    known = {run.name for run in status.evaluations}
    newest = max((run.started_at for run in status.evaluations), default=None)
    floor = newest.replace(microsecond=0) if newest is not None else None
    found = []
    for job in jobs:
        name = (job.get("metadata") or {}).get("name")
        created = _created(job)
        if name in known or created is None or (floor is not None and created < floor):
            continue
        found.append((created, str(name), job))
    return [job for _, _, job in sorted(found, key=lambda item: (item[0], item[1]))]


def run_from_job(job: Mapping[str, Any], now: datetime) -> tuple[EvaluationRun, int, str | None] | None:
    """An unrecorded Job's run (state Running until its result is read), the negatives total it covered and
    its runRequest (None: not a Job this operator made)."""
    metadata = job.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    trigger = annotations.get(ANNOTATION_TRIGGER)
    if not metadata.get("name") or not annotations.get(ANNOTATION_TEST_ID) or trigger not in _TRIGGERS:
        return None
    started = _created(job) or now
    run = EvaluationRun(
        name=str(metadata["name"]),
        test_id=str(annotations[ANNOTATION_TEST_ID]),
        trigger=str(trigger),
        dataset_secret=str(annotations.get(ANNOTATION_DATASET, "")),
        cases=_int(annotations.get(ANNOTATION_CASES)),
        started_at=started,
    )
    return run, _int(annotations.get(ANNOTATION_NEGATIVES_SEEN)), annotations.get(ANNOTATION_RUN_REQUEST)


def finish_run(run: EvaluationRun, outcome: EvalOutcome, threshold: float, now: datetime) -> EvaluationRun:
    """The run once its Job finished: the summary's counts and verdict (the runner's, else rate >= threshold)."""
    summary = outcome.summary
    rate = summary.challenger_better_rate if summary else None
    passed: bool | None = None
    if outcome.state == "Succeeded":
        if summary is not None and summary.passed is not None:
            passed = summary.passed
        else:
            passed = rate is not None and rate >= threshold
    return run.model_copy(
        update={
            "state": outcome.state,
            "finished_at": outcome.finished_at or now,
            "scored": summary.scored if summary else None,
            "challenger_better_rate": rate,
            "passed": passed,
            "message": outcome.message[:1024],
            "unreviewed": summary.unreviewed if summary else None,
            "progress": None,
        }
    )


def vanished_run(run: EvaluationRun, now: datetime) -> EvaluationRun:
    """A Running run whose Job is gone (deleted by hand, or its TTL ran out before the result was read)."""
    return run.model_copy(
        update={"state": "Failed", "finished_at": now, "message": "the Job disappeared before it finished"}
    )


def _finish_key(job: Mapping[str, Any]) -> tuple[str, str]:
    _, condition = job_state(job)
    metadata = job.get("metadata") if isinstance(job.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    when = condition.get("lastTransitionTime") if condition is not None else None
    when = when or metadata.get("creationTimestamp") or ""
    return str(when), str(metadata.get("name", ""))


def jobs_to_prune(jobs: Sequence[Mapping[str, Any]], history_limit: int) -> list[str]:
    """Names of finished Jobs beyond the newest ``history_limit`` finished ones (running Jobs are kept)."""
    finished = [job for job in jobs if job_state(job)[0] != "Running"]
    finished.sort(key=_finish_key, reverse=True)
    names = []
    for job in finished[max(0, history_limit) :]:
        metadata = job.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
            names.append(metadata["name"])
    return names
