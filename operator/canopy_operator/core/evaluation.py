"""Evaluations in the experiment's status: the promotion gate, the trigger's inputs, runs read from Jobs.

Pure: takes the spec, the status, Job manifests (plain dicts) and ``now``; returns values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import EVALUATION_HISTORY_LIMIT, EvaluationRun, Negatives, PromptExperimentStatus
from canopy_operator.core.evaljob import (
    ANNOTATION_DATASET,
    ANNOTATION_TEST_ID,
    ANNOTATION_TRIGGER,
    EvalOutcome,
    Trigger,
    TriggerInputs,
    eval_job_name,
)

ANNOTATION_RUN_REQUEST = "canopy.genaiops.io/run-request"
ANNOTATION_NEGATIVES_SEEN = "canopy.genaiops.io/negatives-seen"
ANNOTATION_CASES = "canopy.genaiops.io/cases"
_TRIGGERS: tuple[Trigger, ...] = ("request", "gate", "negatives")


@dataclass(frozen=True)
class Gate:
    """Whether an automatic promotion of the challenger may go ahead, and why (not)."""

    open: bool
    reason: str
    """CamelCase: GateOff, EvaluationPassed, NoEvaluation, EvaluationRunning, EvaluationFailed, EvaluationNotPassed."""
    message: str


def gate_applies(spec: PromptExperimentSpec) -> bool:
    """The gate holds back automatic promotions only (a Manual approval is the human's call)."""
    ev = spec.evaluation
    return ev.enabled and ev.gate_promotion and spec.promotion.policy == "Automatic"


def latest_run(status: PromptExperimentStatus) -> EvaluationRun | None:
    """The newest evaluation of the active test."""
    if status.test is None:
        return None
    runs = [run for run in status.evaluations if run.test_id == status.test.id]
    return runs[-1] if runs else None


def run_verdict(run: EvaluationRun | None) -> Gate:
    """What a run means for the gate (ignoring whether the gate is on)."""
    if run is None:
        return Gate(False, "NoEvaluation", "no evaluation of this test has run yet")
    if run.state == "Running":
        return Gate(False, "EvaluationRunning", f"evaluation {run.name} is running")
    if run.state == "Failed":
        return Gate(False, "EvaluationFailed", f"evaluation {run.name} failed: {run.message}")
    if run.passed:
        return Gate(True, "EvaluationPassed", f"evaluation {run.name}: {run.message}")
    return Gate(False, "EvaluationNotPassed", f"evaluation {run.name} did not pass: {run.message}")


def gate_state(spec: PromptExperimentSpec, status: PromptExperimentStatus) -> Gate:
    """Open unless the gate applies and the latest evaluation of the active test did not pass."""
    if not gate_applies(spec):
        return Gate(True, "GateOff", "spec.evaluation.gatePromotion is off (or policy is Manual)")
    verdict = run_verdict(latest_run(status))
    if verdict.open:
        return verdict
    if status.negatives.total == 0 and verdict.reason == "NoEvaluation":
        message = "no thumbs-down feedback to evaluate yet; the promotion waits for an evaluation that passes"
        return Gate(False, "NoEvaluation", message)
    return Gate(False, verdict.reason, verdict.message + "; the automatic promotion waits for one that passes")


def gate_released(spec: PromptExperimentSpec, status: PromptExperimentStatus) -> bool:
    """The gate applies and the latest evaluation passed: an automatic promotion held back may go ahead."""
    return gate_applies(spec) and gate_state(spec, status).open


def gate_waiting(spec: PromptExperimentSpec, status: PromptExperimentStatus) -> bool:
    """The test decided for the challenger and only the gate holds the automatic promotion back."""
    return (
        status.evidence.decision == "challenger"
        and status.pending_promotion is None
        and status.phase != "Concluded"
        and gate_applies(spec)
        and not gate_state(spec, status).open
    )


def with_negatives_counts(negatives: Negatives, seen: int, trimmed: int, dataset_secret: str | None) -> Negatives:
    """Negatives after the ledger holds ``seen`` distinct entries (``trimmed`` of them dropped)."""
    return negatives.model_copy(
        update={
            "total": seen,
            "trimmed": trimmed,
            "since_last_evaluation": max(0, seen - negatives.at_last_evaluation),
            "dataset_secret": dataset_secret,
        }
    )


def trigger_inputs(
    spec: PromptExperimentSpec, status: PromptExperimentStatus, job_running: bool, test_over: bool
) -> TriggerInputs:
    """What :func:`should_trigger` looks at; a concluded or promoting test is not evaluated again."""
    ev = spec.evaluation
    return TriggerInputs(
        enabled=ev.enabled and not test_over,
        job_running=job_running,
        active_test_id=status.test.id if status.test else None,
        negatives_total=status.negatives.total - status.negatives.trimmed,
        new_negatives=status.negatives.since_last_evaluation,
        min_new_negatives=ev.min_new_negatives,
        run_request=ev.run_request,
        last_run_request=status.last_run_request,
        gate_promotion=gate_applies(spec),
        automatic_promotion_pending=gate_waiting(spec, status),
        dataset_secret=status.negatives.dataset_secret,
        evaluations=tuple(status.evaluations),
    )


def job_name_for(experiment_name: str, test_id: str, dataset: str, trigger: Trigger, now: datetime) -> str:
    """A fresh Job name per start (a crash between create and status write is caught by adopting the Job)."""
    return eval_job_name(experiment_name, f"{test_id}|{dataset}|{trigger}|{now.isoformat()}")


def seed_for(job_name: str) -> int:
    """The pairwise judge's side-shuffling seed, derived from the Job name (recorded on the Job)."""
    return int(hashlib.sha256(job_name.encode()).hexdigest()[:8], 16)


def start_annotations(status: PromptExperimentStatus, spec: PromptExperimentSpec, trigger: Trigger) -> dict[str, str]:
    """Extra Job annotations that let a run be adopted from the Job alone (after a crash)."""
    out = {
        ANNOTATION_NEGATIVES_SEEN: str(status.negatives.total),
        ANNOTATION_CASES: str(status.negatives.total - status.negatives.trimmed),
    }
    if trigger == "request" and spec.evaluation.run_request:
        out[ANNOTATION_RUN_REQUEST] = spec.evaluation.run_request
    return out


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
        }
    )


def vanished_run(run: EvaluationRun, now: datetime) -> EvaluationRun:
    """A Running run whose Job is gone (deleted by hand, or its TTL ran out before the result was read)."""
    return run.model_copy(
        update={"state": "Failed", "finished_at": now, "message": "the Job disappeared before it finished"}
    )
