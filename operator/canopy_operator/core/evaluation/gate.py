"""The promotion gate: an automatic promotion of the challenger waits for a passing evaluation of the test."""

from __future__ import annotations

from dataclasses import dataclass

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import EvaluationRun, PromptExperimentStatus


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
