"""The promotion gate and evaluation runs in status (pure core.evaluation and its use in core.lifecycle)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import EvaluationRun, Negatives, OriginalConfig, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.evaluation.gate import gate_state, gate_waiting
from canopy_operator.core.evaluation.jobs import start_annotations
from canopy_operator.core.evaluation.results import (
    EvalOutcome,
    EvalSummary,
    finish_run,
    record_start,
    run_from_job,
    unrecorded_jobs,
)
from canopy_operator.core.evaluation.trigger import trigger_inputs
from canopy_operator.core.stats import Assessment

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
WIN = Assessment(
    decisive_votes=30,
    e_value=25.6,
    max_e_value=25.6,
    p_value=0.039,
    cs_lower=0.51,
    cs_upper=1.0,
    decision="challenger",
    reason="challenger wins",
)


def _spec(**evaluation: Any) -> PromptExperimentSpec:
    body: dict[str, Any] = {"challenger": {"prompt": CHALLENGER}}
    body["evaluation"] = {"enabled": True, "gatePromotion": True, **evaluation}
    return PromptExperimentSpec.model_validate(body)


def _status(*runs: EvaluationRun, negatives: int = 4) -> PromptExperimentStatus:
    original = OriginalConfig(prompt=CHAMPION, feedback_enabled=True, ab_testing_enabled=False)
    st = lc.start_test(_spec(), PromptExperimentStatus(original=original), CHAMPION, NOW)
    return st.model_copy(
        update={"evaluations": list(runs), "negatives": Negatives(total=negatives, dataset_secret="exp-dataset-1")}
    )


def _test_id() -> str:
    test = _status().test
    assert test is not None
    return test.id


def _run(state: str = "Succeeded", passed: bool | None = True, test_id: str | None = None) -> EvaluationRun:
    return EvaluationRun(
        name=f"exp-eval-{state.lower()}",
        test_id=test_id or _test_id(),
        trigger="gate",
        dataset_secret="exp-dataset-1",
        cases=4,
        started_at=NOW,
        state=state,
        passed=passed,
        message="DeadlineExceeded: too slow" if state == "Failed" else "4/4 cases scored",
    )


def test_challenger_win_is_held_back_without_an_evaluation() -> None:
    st = lc.apply_assessment(_spec(), _status(), WIN, 1, NOW)
    assert st.pending_promotion is None
    assert st.evidence.decision == "challenger"
    assert gate_waiting(_spec(), st)


def test_challenger_win_is_promoted_when_the_latest_evaluation_passed() -> None:
    st = lc.apply_assessment(_spec(), _status(_run()), WIN, 1, NOW)
    assert st.pending_promotion is not None
    assert st.pending_promotion.outcome == "challenger"


@pytest.mark.parametrize(
    ("run", "reason", "words"),
    [
        (_run("Failed", None), "EvaluationFailed", "DeadlineExceeded"),
        (_run("Succeeded", False), "EvaluationNotPassed", "did not pass"),
        (_run("Running", None), "EvaluationRunning", "is running"),
    ],
)
def test_gate_stays_closed_and_says_why(run: EvaluationRun, reason: str, words: str) -> None:
    gate = gate_state(_spec(), _status(run))
    assert not gate.open
    assert gate.reason == reason
    assert words in gate.message


def test_only_the_latest_run_of_the_active_test_counts() -> None:
    assert not gate_state(_spec(), _status(_run(), _run("Succeeded", False))).open
    assert not gate_state(_spec(), _status(_run(test_id="old-test"))).open


def test_held_promotion_goes_ahead_once_an_evaluation_passes() -> None:
    held = lc.apply_assessment(_spec(), _status(), WIN, 1, NOW)
    assert lc.approve(_spec(), held, 2, NOW).pending_promotion is None
    passed = held.model_copy(update={"evaluations": [_run()]})
    assert lc.approve(_spec(), passed, 2, NOW).pending_promotion is not None


def test_gate_does_not_hold_manual_promotions_or_when_off() -> None:
    manual = _spec().model_copy(update={"promotion": _spec().promotion.model_copy(update={"policy": "Manual"})})
    assert gate_state(manual, _status()).open
    assert lc.apply_assessment(_spec(gatePromotion=False), _status(), WIN, 1, NOW).pending_promotion is not None
    assert lc.apply_assessment(_spec(enabled=False), _status(), WIN, 1, NOW).pending_promotion is not None


def test_held_promotion_triggers_a_gate_evaluation() -> None:
    held = lc.apply_assessment(_spec(minNewNegatives=100), _status(), WIN, 1, NOW)
    inputs = trigger_inputs(_spec(minNewNegatives=100), held, job_running=False, test_over=False)
    assert inputs.automatic_promotion_pending
    assert inputs.gate_promotion


def test_finished_run_takes_the_runner_verdict_or_compares_the_rate() -> None:
    running = _run("Running", None)
    verdict = EvalOutcome("Succeeded", "Complete", "3/4", NOW, EvalSummary(cases=4, challenger_better_rate=0.7))
    assert finish_run(running, verdict, 0.6, NOW).passed is True
    assert finish_run(running, verdict, 0.8, NOW).passed is False
    explicit = EvalOutcome(
        "Succeeded", "Complete", "", NOW, EvalSummary(cases=4, challenger_better_rate=0.0, passed=False)
    )
    assert finish_run(running, explicit, 0.0, NOW).passed is False
    failed = finish_run(running, EvalOutcome("Failed", "DeadlineExceeded", "DeadlineExceeded", NOW), 0.5, NOW)
    assert (failed.state, failed.passed, failed.message) == ("Failed", None, "DeadlineExceeded")


def test_a_job_created_before_a_crash_is_adopted_from_its_annotations() -> None:
    st = _status()
    annotations = {
        "canopy.genaiops.io/test-id": "t1",
        "canopy.genaiops.io/trigger": "request",
        "canopy.genaiops.io/dataset-secret": "exp-dataset-1",
        **start_annotations(st, _spec(runRequest="r-7"), "request"),
    }
    job = {"metadata": {"name": "exp-eval-1", "annotations": annotations, "creationTimestamp": "2026-11-22T11:00:00Z"}}
    adopted = run_from_job(job, NOW)
    assert adopted is not None
    run, seen, request = adopted
    assert (run.name, run.trigger, run.cases, seen, request) == ("exp-eval-1", "request", 4, 4, "r-7")
    after = record_start(st, run, seen, request)
    assert after.last_run_request == "r-7"
    assert after.negatives.since_last_evaluation == 0
    assert run_from_job({"metadata": {"name": "other"}}, NOW) is None


def test_history_of_runs_is_bounded() -> None:
    st = _status()
    for i in range(15):
        st = record_start(st, _run().model_copy(update={"name": f"exp-eval-{i}"}), 4, None)
    assert len(st.evaluations) == 10
    assert st.evaluations[-1].name == "exp-eval-14"


def _job(name: str, created: str, finished: bool = False) -> dict[str, Any]:
    annotations = {
        "canopy.genaiops.io/test-id": "t1",
        "canopy.genaiops.io/trigger": "request",
        "canopy.genaiops.io/dataset-secret": "exp-dataset-1",
    }
    conditions = [{"type": "Complete", "status": "True"}] if finished else []
    return {
        "metadata": {"name": name, "annotations": annotations, "creationTimestamp": created},
        "status": {"conditions": conditions},
    }


def test_jobs_whose_status_write_was_lost_are_adopted_even_if_finished() -> None:
    recorded = _run("Succeeded", True).model_copy(update={"name": "exp-eval-known"})
    st = _status(recorded)  # started at NOW (12:00)
    jobs = [
        _job("exp-eval-known", "2026-11-22T12:00:00Z", finished=True),
        _job("exp-eval-history", "2026-11-22T09:00:00Z", finished=True),
        _job("exp-eval-lost", "2026-11-22T12:05:00Z", finished=True),
    ]
    assert [j["metadata"]["name"] for j in unrecorded_jobs(st, jobs)] == ["exp-eval-lost"]
    assert [j["metadata"]["name"] for j in unrecorded_jobs(_status(), jobs)] == [
        "exp-eval-history",
        "exp-eval-known",
        "exp-eval-lost",
    ]
