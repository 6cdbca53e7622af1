"""Metrics as Prometheus sees them: scraped over HTTP from a started metrics server."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from canopy_operator.telemetry.metrics import Metrics, MetricsServer

metrics = Metrics()  # one registry for this module's tests, as one operator process has


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsServer]:
    started = metrics.start_server(0, addr="127.0.0.1")
    yield started
    started.close()


def _scrape(server: MetricsServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode("utf-8")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def test_every_metric_is_exposed_after_the_helpers_run(server: MetricsServer) -> None:
    metrics.observe_votes("ns-a", "exp", challenger=3, champion=2, ties=1)
    metrics.observe_evidence("ns-a", "exp", lower=0.2, upper=0.9, p_value=0.7)
    metrics.record_decision("promote_challenger")
    metrics.record_promotion("succeeded")
    metrics.record_delivery("configmap", "applied")
    metrics.record_evaluation("passed", 0.75, namespace="ns-a", name="exp")
    metrics.record_backend_error("timeout")
    metrics.set_phase_counts({"Running": 2})
    with metrics.time_backend_poll("/feedback/ab"):
        pass
    with metrics.time_reconcile():
        pass

    names = {name for name, _ in _scrape(server)}

    expected = {
        "canopy_operator_experiments",
        "canopy_operator_experiment_votes",
        "canopy_operator_votes_total",
        "canopy_operator_experiment_win_rate_lower_ratio",
        "canopy_operator_experiment_win_rate_upper_ratio",
        "canopy_operator_experiment_p_value",
        "canopy_operator_decisions_total",
        "canopy_operator_promotions_total",
        "canopy_operator_config_deliveries_total",
        "canopy_operator_evaluation_runs_total",
        "canopy_operator_evaluation_challenger_better_ratio",
        "canopy_operator_backend_errors_total",
        "canopy_operator_backend_poll_duration_seconds_bucket",
        "canopy_operator_backend_poll_duration_seconds_count",
        "canopy_operator_reconcile_duration_seconds_count",
    }
    assert expected <= names


def test_vote_counter_grows_by_the_increase_and_survives_a_new_test(server: MetricsServer) -> None:
    metrics.observe_votes("ns-b", "exp", challenger=10, champion=5, ties=1)
    metrics.observe_votes("ns-b", "exp", challenger=12, champion=5, ties=2)
    after_two = _scrape(server)
    metrics.observe_votes("ns-b", "exp", challenger=3, champion=1, ties=0)  # a new test starts at zero
    after_reset = _scrape(server)

    labels = {"namespace": "ns-b", "name": "exp"}
    assert _value(after_two, "canopy_operator_votes_total", side="challenger", **labels) == 12
    assert _value(after_two, "canopy_operator_votes_total", side="tie", **labels) == 2
    assert _value(after_two, "canopy_operator_experiment_votes", side="champion", **labels) == 5
    assert _value(after_reset, "canopy_operator_votes_total", side="challenger", **labels) == 15
    assert _value(after_reset, "canopy_operator_experiment_votes", side="challenger", **labels) == 3


def test_evidence_gauges_show_the_latest_values(server: MetricsServer) -> None:
    metrics.observe_evidence("ns-c", "exp", lower=0.51, upper=1.0, p_value=0.04)
    samples = _scrape(server)
    labels = {"namespace": "ns-c", "name": "exp"}
    assert _value(samples, "canopy_operator_experiment_win_rate_lower_ratio", **labels) == pytest.approx(0.51)
    assert _value(samples, "canopy_operator_experiment_win_rate_upper_ratio", **labels) == 1.0
    assert _value(samples, "canopy_operator_experiment_p_value", **labels) == pytest.approx(0.04)


def test_forget_experiment_removes_its_series_only(server: MetricsServer) -> None:
    metrics.observe_votes("ns-d", "gone", challenger=1, champion=1, ties=0)
    metrics.observe_evidence("ns-d", "gone", lower=0.0, upper=1.0, p_value=1.0)
    metrics.observe_votes("ns-d", "kept", challenger=1, champion=1, ties=0)

    metrics.forget_experiment("ns-d", "gone")
    samples = _scrape(server)

    gone = [key for key in samples if ("name", "gone") in key[1] and ("namespace", "ns-d") in key[1]]
    assert gone == []
    assert _value(samples, "canopy_operator_votes_total", namespace="ns-d", name="kept", side="tie") == 0
    metrics.observe_votes("ns-d", "gone", challenger=2, champion=0, ties=0)
    again = _scrape(server)
    assert _value(again, "canopy_operator_votes_total", namespace="ns-d", name="gone", side="challenger") == 2


def test_phase_counts_zero_the_phases_left_out(server: MetricsServer) -> None:
    metrics.set_phase_counts({"Running": 3, "Concluded": 1})
    metrics.set_phase_counts({"Concluded": 2})
    samples = _scrape(server)
    assert _value(samples, "canopy_operator_experiments", phase="Running") == 0
    assert _value(samples, "canopy_operator_experiments", phase="Concluded") == 2
    assert _value(samples, "canopy_operator_experiments", phase="Pending") == 0


def test_backend_poll_is_timed_when_the_request_fails(server: MetricsServer) -> None:
    before = _scrape(server).get(
        ("canopy_operator_backend_poll_duration_seconds_count", frozenset({("endpoint", "/feature-flags")})), 0.0
    )
    with pytest.raises(ConnectionError), metrics.time_backend_poll("/feature-flags"):
        raise ConnectionError("refused")
    after = _value(_scrape(server), "canopy_operator_backend_poll_duration_seconds_count", endpoint="/feature-flags")
    assert after == before + 1


def test_counters_count_each_call(server: MetricsServer) -> None:
    before = _scrape(server)
    metrics.record_delivery("git", "conflict")
    metrics.record_delivery("git", "conflict")
    metrics.record_backend_error("http_5xx")
    after = _scrape(server)
    key = ("canopy_operator_config_deliveries_total", frozenset({("mode", "git"), ("result", "conflict")}))
    assert after[key] - before.get(key, 0.0) == 2
    assert _value(after, "canopy_operator_backend_errors_total", kind="http_5xx") >= 1
