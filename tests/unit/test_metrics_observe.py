"""What a reconcile pass publishes: metrics from the change between two statuses, timed backend reads."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.service.observe import Observer
from canopy_operator.service.report import Report
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.errors import BackendHTTPError, BackendProtocolError, BackendUnreachable
from canopy_operator.sources.canopy.source import CanopySource
from canopy_operator.sources.canopy.wire import Answer
from canopy_operator.telemetry.logs import configure_logging
from canopy_operator.telemetry.metrics import Metrics

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
CHAMPION = "Summarize the following text in a clear and detailed manner:\n"


OBSERVER = Observer(Metrics())  # what one operator process holds


def sample(name: str, /, **labels: str) -> float:
    return OBSERVER.metrics.sample(name, labels) or 0.0


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("INFO", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def events(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]


def status(phase: str = "Running", challenger: int = 0, champion: int = 0, **extra: Any) -> dict[str, Any]:
    test = {
        "id": "t1",
        "startedAt": NOW.isoformat(),
        "championHash": "sha256:aaa",
        "challengerHash": "sha256:bbb",
        "championPrompt": CHAMPION,
        "method": "msprt",
        "alpha": 0.05,
        "tau": 0.1,
        "minVotes": 30,
        "maxVotes": 5000,
    }
    body = {"phase": phase, "test": test, "votes": {"challengerWins": challenger, "championWins": champion}}
    return body | extra


def promotion(test_id: str = "t1") -> dict[str, Any]:
    return {
        "testId": test_id,
        "outcome": "challenger",
        "promotedHash": "sha256:bbb",
        "challengerWins": 25,
        "championWins": 5,
        "ties": 0,
        "pValue": 0.04,
        "summary": "challenger preferred",
        "decidedAt": NOW.isoformat(),
        "completedAt": NOW.isoformat(),
        "revision": "rv-9",
    }


def run_pass(namespace: str, before: dict[str, Any], after: dict[str, Any], **report: Any) -> None:
    watch = OBSERVER.watch(namespace, "exp", {"spec": {}, "status": before})
    watch.report(Report(status=PromptExperimentStatus.model_validate(after), **report))
    watch.close()


def test_a_promotion_is_counted_once_when_passes_repeat(logs: io.StringIO) -> None:
    before = sample("canopy_operator_promotions_total", outcome="challenger")
    concluded = status("Concluded", 25, 5, promotions=[promotion()])
    run_pass("ns-p", status("Promoting", 25, 5), concluded)
    run_pass("ns-p", concluded, concluded)
    assert sample("canopy_operator_promotions_total", outcome="challenger") == before + 1
    assert events(logs).count("prompt_promoted") == 1


def test_votes_are_published_and_logged_only_when_new(logs: io.StringIO) -> None:
    run_pass("ns-v", status(challenger=3, champion=1), status(challenger=3, champion=1))
    run_pass("ns-v", status(challenger=3, champion=1), status(challenger=5, champion=1))
    assert sample("canopy_operator_votes_total", namespace="ns-v", name="exp", side="challenger") == 5
    assert events(logs).count("votes_synced") == 1


def test_deliveries_are_counted_by_mode_and_result() -> None:
    before = sample("canopy_operator_config_deliveries_total", mode="configmap", result="failed")
    run_pass("ns-d", status(), status("Degraded"), delivered="failed")
    assert sample("canopy_operator_config_deliveries_total", mode="configmap", result="failed") == before + 1


def test_a_finished_evaluation_is_counted_once_with_its_result(logs: io.StringIO) -> None:
    run = {
        "name": "eval-1",
        "testId": "t1",
        "trigger": "negatives",
        "datasetSecret": "ds",
        "cases": 10,
        "startedAt": NOW.isoformat(),
    }
    done = run | {"state": "Succeeded", "finishedAt": NOW.isoformat(), "passed": False, "challengerBetterRate": 0.3}
    before = sample("canopy_operator_evaluation_runs_total", result="failed")
    run_pass("ns-e", status(evaluations=[run]), status(evaluations=[done]))
    run_pass("ns-e", status(evaluations=[done]), status(evaluations=[done]))
    assert sample("canopy_operator_evaluation_runs_total", result="failed") == before + 1
    assert sample("canopy_operator_evaluation_challenger_better_ratio", namespace="ns-e", name="exp") == 0.3
    assert events(logs).count("evaluation_finished") == 1


def test_forget_drops_the_experiment_from_phases_and_series() -> None:
    OBSERVER.phases.clear()
    run_pass("ns-f", status(challenger=2), status(challenger=2))
    assert sample("canopy_operator_experiments", phase="Running") == 1
    OBSERVER.forget("ns-f", "exp")
    assert sample("canopy_operator_experiments", phase="Running") == 0
    assert (
        OBSERVER.metrics.sample(
            "canopy_operator_votes_total", {"namespace": "ns-f", "name": "exp", "side": "challenger"}
        )
        is None
    )


def test_prompt_texts_never_reach_the_log(logs: io.StringIO) -> None:
    run_pass("ns-l", {}, status(challenger=1))
    assert "experiment_started" in events(logs)
    assert CHAMPION.strip() not in logs.getvalue()


class FailingWire:
    """Every request fails with the given domain error, raised where the client would raise it."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.closed = False

    async def send(self, method: str, path: str, body: Any) -> Answer:
        raise self.exc

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (BackendUnreachable("GET /feature-flags", "refused"), "unreachable"),
        (BackendHTTPError("GET /feature-flags", 503, "down"), "http_5xx"),
        (BackendHTTPError("GET /feature-flags", 404, "Feedback feature is not enabled"), "http_4xx"),
        (BackendProtocolError("GET /feature-flags", "bad JSON"), "protocol"),
    ],
)
async def test_backend_failures_are_counted_by_kind_and_still_timed(exc: Exception, kind: str) -> None:
    errors = sample("canopy_operator_backend_errors_total", kind=kind)
    timed = sample("canopy_operator_backend_poll_duration_seconds_count", endpoint="/feature-flags")
    source = CanopySource(
        CanopyClient("http://canopy-backend:8000", timeout=5, wire=lambda url, tls: FailingWire(exc)),
        OBSERVER.time_request,
    )
    with pytest.raises(type(exc)):
        await source.flags()
    await source.aclose()
    assert sample("canopy_operator_backend_errors_total", kind=kind) == errors + 1
    assert sample("canopy_operator_backend_poll_duration_seconds_count", endpoint="/feature-flags") == timed + 1
