"""What a scrape of the operator's /metrics serves besides its own metrics, and what it leaves out.

The tests scrape a freshly made :class:`Metrics` over HTTP in both formats Prometheus asks for: the classic
text format and OpenMetrics (which Prometheus prefers, and where ``_created`` series used to show up too).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from prometheus_client import enable_created_metrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Sample

from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.service.observe import Observer
from canopy_operator.service.report import Report
from canopy_operator.telemetry import metrics as metrics_module
from canopy_operator.telemetry.metrics import Metrics, MetricsServer

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
DECIDED = "canopy_operator_experiment_decided_timestamp_seconds"
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process metrics read /proc (Linux)")


class Scrape(NamedTuple):
    """One scrape of the same registry in both formats."""

    text: str
    openmetrics: str

    def samples(self) -> dict[str, list[Sample]]:
        """The parsed samples of each format."""
        return {
            "text": [s for family in parse_text(self.text) for s in family.samples],
            "openmetrics": [s for family in parse_openmetrics(self.openmetrics) for s in family.samples],
        }


def _get(server: MetricsServer, accept: str | None = None) -> str:
    headers = {"Accept": accept} if accept else {}
    with httpx.Client(trust_env=False, timeout=5) as client:  # no proxy between the test and 127.0.0.1
        response = client.get(f"http://127.0.0.1:{server.port}/metrics", headers=headers)
    assert response.status_code == 200
    return response.text


@pytest.fixture
def scrape() -> Iterator[Scrape]:
    """A Metrics made while ``_created`` series are on, after every kind of metric recorded once, scraped.

    prometheus_client's switch is process-wide and another test's Metrics may have turned it off already:
    switching it back on (the library default) first means only this Metrics can be why the series are gone.
    """
    enable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    made = Metrics()
    made.record_delivery("configmap", "failed")
    made.record_backend_error("unreachable")
    made.record_decision("challenger", namespace="ns-x", name="exp", at=1_800_000_000.0)
    made.observe_votes("ns-x", "exp", challenger=3, champion=1, ties=0)
    with made.time_backend_poll("/feedback/ab"):
        pass
    with made.time_reconcile():
        pass
    server = made.start_server(0, "127.0.0.1")
    try:
        yield Scrape(text=_get(server), openmetrics=_get(server, OPENMETRICS))
    finally:
        server.close()


def _one(samples: list[Sample], name: str) -> Sample:
    found = [sample for sample in samples if sample.name == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def test_metrics_endpoint_serves_no_created_series(scrape: Scrape) -> None:
    assert scrape.openmetrics.rstrip().endswith("# EOF")  # the server did answer in OpenMetrics
    for fmt, samples in scrape.samples().items():
        names = {sample.name for sample in samples}
        assert [name for name in names if name.endswith("_created")] == [], fmt
        assert {
            "canopy_operator_config_deliveries_total",
            "canopy_operator_backend_errors_total",
            "canopy_operator_votes_total",
            "canopy_operator_backend_poll_duration_seconds_bucket",
            "canopy_operator_backend_poll_duration_seconds_sum",
            "canopy_operator_backend_poll_duration_seconds_count",
            "canopy_operator_reconcile_duration_seconds_bucket",
            "canopy_operator_reconcile_duration_seconds_sum",
            "canopy_operator_reconcile_duration_seconds_count",
        } <= names, fmt
    for text in scrape:
        assert "_created" not in text  # not in a sample, a HELP or a TYPE line either


@needs_proc
def test_metrics_endpoint_serves_process_metrics(scrape: Scrape) -> None:
    for fmt, samples in scrape.samples().items():
        assert _one(samples, "process_cpu_seconds_total").value >= 0, fmt
        assert _one(samples, "process_resident_memory_bytes").value > 0, fmt
        assert _one(samples, "process_virtual_memory_bytes").value > 0, fmt
        assert _one(samples, "process_open_fds").value >= 3, fmt  # stdin, stdout, stderr at least
        assert _one(samples, "process_max_fds").value >= _one(samples, "process_open_fds").value, fmt
        started = _one(samples, "process_start_time_seconds").value
        assert time.time() - 7 * 24 * 3600 < started <= time.time(), fmt


def test_metrics_endpoint_serves_python_platform_info(scrape: Scrape) -> None:
    for fmt, samples in scrape.samples().items():
        info = _one(samples, "python_info")
        assert info.value == 1, fmt
        assert info.labels["version"] == platform.python_version(), fmt
        assert info.labels["implementation"] == platform.python_implementation(), fmt


def test_metrics_endpoint_serves_build_info_with_version_and_python(scrape: Scrape) -> None:
    for fmt, samples in scrape.samples().items():
        info = _one(samples, "canopy_operator_build_info")  # one series: no label that can grow
        assert info.value == 1, fmt
        assert info.labels == {"version": installed_version("canopy-operator"), "python": platform.python_version()}


def test_build_version_is_unknown_when_the_distribution_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(metrics_module, "version", missing)
    made = Metrics()
    assert metrics_module.build_version() == "unknown"
    assert made.sample("canopy_operator_build_info", {"version": "unknown", "python": platform.python_version()}) == 1


def test_recording_a_decision_publishes_when_the_experiment_decided(scrape: Scrape) -> None:
    for fmt, samples in scrape.samples().items():
        decided = _one(samples, DECIDED)
        assert decided.labels == {"namespace": "ns-x", "name": "exp", "outcome": "challenger"}, fmt
        assert decided.value == 1_800_000_000.0, fmt


def test_a_new_decision_replaces_the_experiments_decided_series() -> None:
    made = Metrics()
    made.record_decision("champion", namespace="ns-r", name="exp", at=100.0)
    made.record_decision("challenger", namespace="ns-r", name="other", at=150.0)
    made.record_decision("equivalent", namespace="ns-r", name="exp", at=200.0)
    assert made.sample(DECIDED, {"namespace": "ns-r", "name": "exp", "outcome": "champion"}) is None
    assert made.sample(DECIDED, {"namespace": "ns-r", "name": "exp", "outcome": "equivalent"}) == 200.0
    assert made.sample(DECIDED, {"namespace": "ns-r", "name": "other", "outcome": "challenger"}) == 150.0
    assert made.sample("canopy_operator_decisions_total", {"outcome": "champion"}) == 1


def test_a_decision_without_an_experiment_only_counts() -> None:
    made = Metrics()
    made.record_decision("no_winner")
    assert made.sample("canopy_operator_decisions_total", {"outcome": "no_winner"}) == 1
    assert [s for family in made.registry.collect() if family.name == DECIDED for s in family.samples] == []


def test_forgetting_an_experiment_removes_its_decided_series() -> None:
    made = Metrics()
    made.record_decision("challenger", namespace="ns-g", name="gone", at=100.0)
    made.record_decision("champion", namespace="ns-g", name="kept", at=100.0)
    made.forget_experiment("ns-g", "gone")
    assert made.sample(DECIDED, {"namespace": "ns-g", "name": "gone", "outcome": "challenger"}) is None
    assert made.sample(DECIDED, {"namespace": "ns-g", "name": "kept", "outcome": "champion"}) == 100.0
    made.forget_all_experiments()
    assert made.sample(DECIDED, {"namespace": "ns-g", "name": "kept", "outcome": "champion"}) is None


def test_a_pass_that_decides_publishes_the_decision_time_of_its_experiment() -> None:
    observer = Observer(Metrics())
    before = time.time()
    watch = observer.watch("ns-o", "exp", {"spec": {}, "status": {}})
    watch.report(Report(status=PromptExperimentStatus(), decision="challenger"))
    watch.close()
    decided = observer.metrics.sample(DECIDED, {"namespace": "ns-o", "name": "exp", "outcome": "challenger"})
    assert decided is not None
    assert before <= decided <= time.time()
    observer.forget("ns-o", "exp")
    assert observer.metrics.sample(DECIDED, {"namespace": "ns-o", "name": "exp", "outcome": "challenger"}) is None
