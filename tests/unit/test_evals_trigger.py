"""When to start an evaluation, and which finished evaluation Jobs to delete."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_operator.api.status import EvaluationRun
from canopy_operator.core.evaluation.results import jobs_to_prune
from canopy_operator.core.evaluation.trigger import TriggerInputs, should_trigger

BASE = TriggerInputs(
    enabled=True,
    job_running=False,
    active_test_id="t1",
    negatives_total=12,
    new_negatives=3,
    min_new_negatives=10,
    run_request=None,
    last_run_request=None,
    gate_promotion=False,
    automatic_promotion_pending=False,
    dataset_secret="exp-dataset-aaaa1111",
)


def _run(test_id: str = "t1", dataset: str = "exp-dataset-aaaa1111", passed: bool | None = False) -> EvaluationRun:
    return EvaluationRun(
        name="exp-eval-1",
        test_id=test_id,
        trigger="gate",
        dataset_secret=dataset,
        cases=12,
        started_at=datetime(2026, 5, 1, tzinfo=UTC),
        state="Succeeded",
        passed=passed,
    )


GATE = {"gate_promotion": True, "automatic_promotion_pending": True}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, None),
        ({"new_negatives": 10}, "negatives"),
        ({"new_negatives": 25}, "negatives"),
        ({"new_negatives": 9}, None),
        ({"run_request": "now-1"}, "request"),
        ({"run_request": "now-1", "last_run_request": "now-1"}, None),
        ({"run_request": "now-2", "last_run_request": "now-1"}, "request"),
        ({"run_request": ""}, None),
        (GATE, "gate"),
        ({**GATE, "evaluations": (_run(passed=True),)}, None),
        ({**GATE, "evaluations": (_run(passed=False),)}, None),
        ({**GATE, "evaluations": (_run(dataset="exp-dataset-old00000", passed=False),)}, "gate"),
        ({**GATE, "evaluations": (_run(test_id="t0", passed=True),)}, "gate"),
        ({"gate_promotion": True}, None),
        ({"automatic_promotion_pending": True}, None),
        ({**GATE, "evaluations": (_run(passed=False),), "new_negatives": 10}, "negatives"),
        ({"job_running": True, "new_negatives": 50}, None),
        ({"job_running": True, "run_request": "now-1"}, None),
        ({"job_running": True, **GATE}, None),
        ({"enabled": False, "new_negatives": 50, "run_request": "now-1"}, None),
        ({"active_test_id": None, "new_negatives": 50}, None),
        ({"negatives_total": 0, "new_negatives": 0, "run_request": "now-1"}, None),
        ({"dataset_secret": None, **GATE}, None),
        ({"run_request": "now-1", **GATE, "new_negatives": 50}, "request"),
        ({**GATE, "new_negatives": 50}, "gate"),
    ],
)
def test_trigger_table(changes: dict[str, Any], expected: str | None) -> None:
    decision = should_trigger(replace(BASE, **changes))
    assert decision.trigger == expected, decision.reason
    assert decision.reason


def test_trigger_reason_explains_a_wait() -> None:
    assert should_trigger(BASE).reason == "3/10 new negatives"
    assert should_trigger(replace(BASE, job_running=True)).reason == "an evaluation is running"


def _job(name: str, finished: str | None, created: str = "2026-05-01T00:00:00Z") -> dict[str, Any]:
    conditions = [] if finished is None else [{"type": "Complete", "status": "True", "lastTransitionTime": finished}]
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": {"conditions": conditions}}


def test_prune_keeps_the_newest_finished_jobs_and_every_running_one() -> None:
    jobs = [
        _job("old", "2026-05-01T01:00:00Z"),
        _job("running-old", None, created="2026-04-01T00:00:00Z"),
        _job("newest", "2026-05-01T04:00:00Z"),
        _job("middle", "2026-05-01T03:00:00Z"),
        _job("older", "2026-05-01T02:00:00Z"),
    ]
    assert sorted(jobs_to_prune(jobs, history_limit=2)) == ["old", "older"]
    assert jobs_to_prune(jobs, history_limit=4) == []
    assert sorted(jobs_to_prune(jobs, history_limit=0)) == ["middle", "newest", "old", "older"]


def test_prune_counts_failed_jobs_as_finished() -> None:
    failed = {
        "metadata": {"name": "failed"},
        "status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2026-05-01T00:00:00Z"}]},
    }
    assert jobs_to_prune([failed, _job("done", "2026-05-02T00:00:00Z")], history_limit=1) == ["failed"]
