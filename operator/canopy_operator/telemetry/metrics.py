"""Prometheus metrics of the operator, on a registry of its own.

The operator makes one :class:`Metrics` at start-up (its own registry) and hands it to whatever reports;
nothing else touches the metric objects. Names follow the
Prometheus conventions (``canopy_operator_`` prefix, base units, ``_total`` for counters, ``_ratio`` for
values in [0, 1]). Per-experiment series carry ``namespace`` and ``name``; the ServiceMonitor sets
``honorLabels: true`` so the scrape target's own ``namespace`` does not rename them. Label values of
``endpoint``, ``kind``, ``outcome``, ``result`` and ``mode`` must come from small fixed sets (an endpoint
is a path template such as ``/feedback/ab``, never a URL with an id), or cardinality grows without bound.

Besides its own metrics the registry serves the standard ``process_*`` series (CPU, memory, open file
descriptors, start time), ``python_info`` and ``canopy_operator_build_info{version, python}``. Counters and
histograms expose no ``_created`` series: the samples a scrape does not need are switched off when a
:class:`Metrics` is made (prometheus_client's switch is process-wide).
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Literal, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from canopy_operator.api.status import Phase

Side = Literal["challenger", "champion", "tie"]
SIDES: tuple[Side, ...] = get_args(Side)
PREFIX = "canopy_operator"
DISTRIBUTION = "canopy-operator"
_EXPERIMENT = ("namespace", "name")

#: Label values known in advance: their series are served as 0 from the start, so a rate() or an alert
#: sees the first increase and a dashboard shows "none yet" instead of "no data".
DECISION_OUTCOMES = ("challenger", "champion", "no_winner", "equivalent", "aborted")
DELIVERY_MODES = ("configmap", "git")
DELIVERY_RESULTS = ("changed", "unchanged", "failed")
EVALUATION_RESULTS = ("passed", "failed", "completed", "error")
BACKEND_ERROR_KINDS = ("unreachable", "http_4xx", "http_5xx", "protocol", "stream")
NOTIFICATION_RESULTS = ("sent", "failed", "refused")


@dataclass(frozen=True)
class MetricsServer:
    """A running metrics endpoint; ``port`` is the bound port (useful when started on port 0)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Metrics:
    """Every metric of the operator, on a registry of its own (one per operator process, or per test)."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client; no *_created series
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the labels name the operator's version and the Python version it runs on.",
            ["version", "python"],
            registry=self.registry,
        )
        self.build_info.labels(build_version(), platform.python_version()).set(1)
        self.experiments = Gauge(
            f"{PREFIX}_experiments", "PromptExperiments by phase.", ["phase"], registry=self.registry
        )
        self.experiment_votes = Gauge(
            f"{PREFIX}_experiment_votes",
            "Votes counted in the running test of an experiment, by side (challenger, champion, tie).",
            [*_EXPERIMENT, "side"],
            registry=self.registry,
        )
        self.votes = Counter(
            f"{PREFIX}_votes",
            "Votes counted by the operator, by side (challenger, champion, tie).",
            [*_EXPERIMENT, "side"],
            registry=self.registry,
        )
        self.win_rate_lower = Gauge(
            f"{PREFIX}_experiment_win_rate_lower_ratio",
            "Lower end of the always-valid confidence sequence for P(challenger preferred).",
            _EXPERIMENT,
            registry=self.registry,
        )
        self.win_rate_upper = Gauge(
            f"{PREFIX}_experiment_win_rate_upper_ratio",
            "Upper end of the always-valid confidence sequence for P(challenger preferred).",
            _EXPERIMENT,
            registry=self.registry,
        )
        self.p_value = Gauge(
            f"{PREFIX}_experiment_p_value",
            "Always-valid p-value of the running test (no difference between the prompts).",
            _EXPERIMENT,
            registry=self.registry,
        )
        self.decisions = Counter(
            f"{PREFIX}_decisions", "Test decisions, by outcome.", ["outcome"], registry=self.registry
        )
        self.decided_at = Gauge(
            f"{PREFIX}_experiment_decided_timestamp_seconds",
            "When the latest test of an experiment decided (Unix time), labelled with the outcome.",
            [*_EXPERIMENT, "outcome"],
            registry=self.registry,
        )
        self.promotions = Counter(
            f"{PREFIX}_promotions", "Promotions, by outcome.", ["outcome"], registry=self.registry
        )
        self.evaluation_runs = Counter(
            f"{PREFIX}_evaluation_runs", "Evaluation suite runs, by result.", ["result"], registry=self.registry
        )
        self.evaluation_better = Gauge(
            f"{PREFIX}_evaluation_challenger_better_ratio",
            "Share of suite cases where the judge preferred the challenger, last evaluation of an experiment.",
            _EXPERIMENT,
            registry=self.registry,
        )
        self.backend_poll = Histogram(
            f"{PREFIX}_backend_poll_duration_seconds",
            "Duration of requests to the Canopy backend, by endpoint (path template).",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.backend_errors = Counter(
            f"{PREFIX}_backend_errors",
            "Failed requests to the Canopy backend, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            f"{PREFIX}_config_deliveries",
            "Configuration deliveries to the backend, by mode (git, configmap) and result.",
            ["mode", "result"],
            registry=self.registry,
        )
        self.notifications = Counter(
            f"{PREFIX}_notifications",
            "Webhook notifications: posts accepted (sent) or not (failed), and passes whose webhook Secret was "
            "refused (refused).",
            ["result"],
            registry=self.registry,
        )
        self.reconcile = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Duration of one reconciliation of a PromptExperiment.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._last_votes: dict[tuple[str, str], dict[Side, int]] = {}
        self._phases_shown: set[str] = set(get_args(Phase))
        self._zero_known_series()

    def _per_experiment(self) -> tuple[Gauge | Counter, ...]:
        return (
            self.experiment_votes,
            self.votes,
            self.win_rate_lower,
            self.win_rate_upper,
            self.p_value,
            self.evaluation_better,
            self.decided_at,
        )

    def start_server(self, port: int, addr: str = "0.0.0.0") -> MetricsServer:  # noqa: S104 - pods serve all
        """Serve the registry at ``http://addr:port/metrics`` from a daemon thread."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(server=server, thread=thread)

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The current value of one series (None when it does not exist)."""
        return self.registry.get_sample_value(name, dict(labels or {}))

    def observe_votes(self, namespace: str, name: str, challenger: int, champion: int, ties: int) -> None:
        """Publish an experiment's cumulative vote counts; counters grow by the increase since last time.

        A count lower than the previous one means a new test started (votes are never carried over), so
        the counter grows by the whole new count.
        """
        counts: dict[Side, int] = {"challenger": challenger, "champion": champion, "tie": ties}
        with self._lock:
            previous = self._last_votes.get((namespace, name), {})
            for side, count in counts.items():
                before = previous.get(side, 0)
                increase = count - before if count >= before else count
                if increase:
                    self.votes.labels(namespace, name, side).inc(increase)
                else:
                    self.votes.labels(namespace, name, side)  # expose a zero series from the first look
                self.experiment_votes.labels(namespace, name, side).set(count)
            self._last_votes[(namespace, name)] = counts

    def observe_evidence(self, namespace: str, name: str, lower: float, upper: float, p_value: float) -> None:
        """Publish the confidence sequence for P(challenger preferred) and the always-valid p-value."""
        self.win_rate_lower.labels(namespace, name).set(lower)
        self.win_rate_upper.labels(namespace, name).set(upper)
        self.p_value.labels(namespace, name).set(p_value)

    def record_decision(self, outcome: str, *, namespace: str = "", name: str = "", at: float | None = None) -> None:
        """Count one decision of a test: ``challenger``, ``champion``, ``no_winner`` or ``equivalent``.

        With the experiment named, also publish when it decided (``at``, Unix time; now by default). An
        experiment keeps one such series, its latest decision's: a new outcome replaces the previous one.
        """
        self.decisions.labels(outcome).inc()
        if not (namespace and name):
            return
        with self._lock:
            self.decided_at.remove_by_labels({"namespace": namespace, "name": name})
            self.decided_at.labels(namespace, name, outcome).set(time.time() if at is None else at)

    def record_promotion(self, outcome: str) -> None:
        """Count one concluded test by its outcome.

        ``challenger`` (promoted), ``champion`` (kept), ``no_winner`` or ``equivalent`` (champion kept).
        """
        self.promotions.labels(outcome).inc()

    def record_delivery(self, mode: str, result: str) -> None:
        """Count one config delivery: mode ``configmap`` or ``git``, result ``changed``, ``unchanged`` or ``failed``."""
        self.deliveries.labels(mode, result).inc()

    def record_evaluation(self, result: str, rate: float | None = None, *, namespace: str = "", name: str = "") -> None:
        """Count one finished evaluation run; publish its challenger-better rate for the experiment when known.

        ``result``: ``passed`` / ``failed`` (against the threshold), ``completed`` (no threshold) or ``error``
        (the run itself failed). ``service/observe.py`` calls this once per run, when status records its end.
        """
        self.evaluation_runs.labels(result).inc()
        if rate is not None:
            self.evaluation_better.labels(namespace, name).set(rate)

    def record_backend_error(self, kind: str) -> None:
        """Count one failed backend request by kind: unreachable, http_4xx, http_5xx, protocol, stream."""
        self.backend_errors.labels(kind).inc()

    def record_notification(self, result: str) -> None:
        """Count one webhook post (``sent``, ``failed``) or one refused webhook Secret (``refused``)."""
        self.notifications.labels(result).inc()

    @contextmanager
    def time_backend_poll(self, endpoint: str) -> Iterator[None]:
        """Time a backend request (also when it raises) under the path template ``endpoint``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.backend_poll.labels(endpoint).observe(time.perf_counter() - start)

    @contextmanager
    def time_reconcile(self) -> Iterator[None]:
        """Time one reconciliation (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.reconcile.observe(time.perf_counter() - start)

    def set_phase_counts(self, counts: Mapping[str, int]) -> None:
        """Publish how many experiments are in each phase; phases missing from ``counts`` show 0."""
        with self._lock:
            self._phases_shown.update(counts)
            for phase in sorted(self._phases_shown):
                self.experiments.labels(phase).set(counts.get(phase, 0))

    def forget_experiment(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted experiment."""
        with self._lock:
            self._last_votes.pop((namespace, name), None)
            for metric in self._per_experiment():
                metric.remove_by_labels({"namespace": namespace, "name": name})

    def forget_all_experiments(self) -> None:
        """Drop the series of every experiment (an operator starting again knows none yet)."""
        with self._lock:
            self._last_votes.clear()
            for metric in self._per_experiment():
                metric.clear()

    def _zero_known_series(self) -> None:
        for outcome in DECISION_OUTCOMES:
            self.decisions.labels(outcome)
            self.promotions.labels(outcome)
        for mode in DELIVERY_MODES:
            for result in DELIVERY_RESULTS:
                self.deliveries.labels(mode, result)
        for result in EVALUATION_RESULTS:
            self.evaluation_runs.labels(result)
        for kind in BACKEND_ERROR_KINDS:
            self.backend_errors.labels(kind)
        for result in NOTIFICATION_RESULTS:
            self.notifications.labels(result)


def build_version() -> str:
    """The installed ``canopy-operator`` distribution's version (``unknown`` when it is not installed)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
