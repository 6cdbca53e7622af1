"""When to start an evaluation: on request (a changed runRequest), for the promotion gate, or on enough
new thumbs-down feedback; never while one runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import EvaluationRun, Negatives, PromptExperimentStatus
from canopy_operator.core.evaluation.gate import gate_applies, gate_waiting

Trigger = Literal["request", "gate", "negatives"]


@dataclass(frozen=True)
class TriggerInputs:
    """What the trigger decision looks at (all read from the spec, the status and the Job list)."""

    enabled: bool
    job_running: bool
    """An evaluation Job of this experiment has not finished."""
    active_test_id: str | None
    negatives_total: int
    """Thumbs-down entries in the current dataset."""
    new_negatives: int
    """Entries that arrived after the last evaluation started."""
    min_new_negatives: int
    run_request: str | None
    last_run_request: str | None
    """The runRequest value last honoured (kept in the status by the caller)."""
    gate_promotion: bool
    automatic_promotion_pending: bool
    """The test decided for the challenger, policy Automatic, and the promotion waits for the gate."""
    dataset_secret: str | None
    evaluations: Sequence[EvaluationRun] = ()


@dataclass(frozen=True)
class TriggerDecision:
    """Whether to start an evaluation now, why (request, gate or negatives), or why not."""

    trigger: Trigger | None
    reason: str


def _gate_needs_run(inputs: TriggerInputs) -> tuple[bool, str]:
    if not (inputs.gate_promotion and inputs.automatic_promotion_pending):
        return False, ""
    runs = [run for run in inputs.evaluations if run.test_id == inputs.active_test_id]
    if any(run.passed for run in runs):
        return False, "an evaluation of the active test already passed"
    if any(run.dataset_secret == inputs.dataset_secret for run in runs):
        return (
            False,
            "the gate's evaluation of this dataset did not pass; waiting for new negatives or a runRequest",
        )
    return True, "an automatic promotion waits for a passing evaluation"


def should_trigger(inputs: TriggerInputs) -> TriggerDecision:
    """Start an evaluation when asked (changed runRequest), for the promotion gate, or on enough new
    negatives; never while one runs, when disabled, without an active test or without negatives."""
    if not inputs.enabled:
        return TriggerDecision(None, "evaluations are disabled")
    if inputs.job_running:
        return TriggerDecision(None, "an evaluation is running")
    if inputs.active_test_id is None:
        return TriggerDecision(None, "no active test")
    if inputs.negatives_total <= 0 or inputs.dataset_secret is None:
        return TriggerDecision(None, "no negative feedback to evaluate yet")
    if inputs.run_request and inputs.run_request != inputs.last_run_request:
        return TriggerDecision("request", f"runRequest changed to {inputs.run_request!r}")
    gate, why = _gate_needs_run(inputs)
    if gate:
        return TriggerDecision("gate", why)
    if inputs.new_negatives >= inputs.min_new_negatives:
        return TriggerDecision(
            "negatives", f"{inputs.new_negatives} new negatives (at least {inputs.min_new_negatives})"
        )
    wait = f"{inputs.new_negatives}/{inputs.min_new_negatives} new negatives"
    return TriggerDecision(None, f"{why}; {wait}" if why else wait)


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
