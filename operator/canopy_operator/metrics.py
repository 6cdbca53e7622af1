"""Prometheus metrics of the operator, on a registry of its own.

Handlers call the small functions below; nothing else touches the metric objects. Names follow the
Prometheus conventions (``canopy_operator_`` prefix, base units, ``_total`` for counters, ``_ratio`` for
values in [0, 1]). Per-experiment series carry ``namespace`` and ``name``; the ServiceMonitor sets
``honorLabels: true`` so the scrape target's own ``namespace`` does not rename them. Label values of
``endpoint``, ``kind``, ``outcome``, ``result`` and ``mode`` must come from small fixed sets (an endpoint
is a path template such as ``/feedback/ab``, never a URL with an id), or cardinality grows without bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from canopy_operator.api.status import Phase

Side = Literal["challenger", "champion", "tie"]
SIDES: tuple[Side, ...] = get_args(Side)
PREFIX = "canopy_operator"
_EXPERIMENT = ("namespace", "name")

registry = CollectorRegistry(auto_describe=True)

EXPERIMENTS = Gauge(f"{PREFIX}_experiments", "PromptExperiments by phase.", ["phase"], registry=registry)
EXPERIMENT_VOTES = Gauge(
    f"{PREFIX}_experiment_votes",
    "Votes counted in the running test of an experiment, by side (challenger, champion, tie).",
    [*_EXPERIMENT, "side"],
    registry=registry,
)
VOTES = Counter(
    f"{PREFIX}_votes",
    "Votes counted by the operator, by side (challenger, champion, tie).",
    [*_EXPERIMENT, "side"],
    registry=registry,
)
WIN_RATE_LOWER = Gauge(
    f"{PREFIX}_experiment_win_rate_lower_ratio",
    "Lower end of the always-valid confidence sequence for P(challenger preferred).",
    _EXPERIMENT,
    registry=registry,
)
WIN_RATE_UPPER = Gauge(
    f"{PREFIX}_experiment_win_rate_upper_ratio",
    "Upper end of the always-valid confidence sequence for P(challenger preferred).",
    _EXPERIMENT,
    registry=registry,
)
P_VALUE = Gauge(
    f"{PREFIX}_experiment_p_value",
    "Always-valid p-value of the running test (no difference between the prompts).",
    _EXPERIMENT,
    registry=registry,
)
DECISIONS = Counter(f"{PREFIX}_decisions", "Test decisions, by outcome.", ["outcome"], registry=registry)
PROMOTIONS = Counter(f"{PREFIX}_promotions", "Promotions, by outcome.", ["outcome"], registry=registry)
EVALUATION_RUNS = Counter(
    f"{PREFIX}_evaluation_runs", "Evaluation suite runs, by result.", ["result"], registry=registry
)
EVALUATION_BETTER = Gauge(
    f"{PREFIX}_evaluation_challenger_better_ratio",
    "Share of suite cases where the judge preferred the challenger, last evaluation of an experiment.",
    _EXPERIMENT,
    registry=registry,
)
BACKEND_POLL = Histogram(
    f"{PREFIX}_backend_poll_duration_seconds",
    "Duration of requests to the Canopy backend, by endpoint (path template).",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=registry,
)
BACKEND_ERRORS = Counter(
    f"{PREFIX}_backend_errors", "Failed requests to the Canopy backend, by kind.", ["kind"], registry=registry
)
DELIVERIES = Counter(
    f"{PREFIX}_config_deliveries",
    "Configuration deliveries to the backend, by mode (git, configmap) and result.",
    ["mode", "result"],
    registry=registry,
)
RECONCILE = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Duration of one reconciliation of a PromptExperiment.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    registry=registry,
)

#: Label values known in advance: their series are served as 0 from the start, so a rate() or an alert
#: sees the first increase and a dashboard shows "none yet" instead of "no data".
DECISION_OUTCOMES = ("challenger", "champion", "no_winner", "equivalent")
DELIVERY_MODES = ("configmap", "git")
DELIVERY_RESULTS = ("changed", "unchanged", "failed")
EVALUATION_RESULTS = ("passed", "failed", "completed", "error")
BACKEND_ERROR_KINDS = ("unreachable", "http_4xx", "http_5xx", "protocol", "stream")

_PER_EXPERIMENT = (EXPERIMENT_VOTES, VOTES, WIN_RATE_LOWER, WIN_RATE_UPPER, P_VALUE, EVALUATION_BETTER)
_lock = threading.Lock()
_last_votes: dict[tuple[str, str], dict[Side, int]] = {}
_phases_shown: set[str] = set(get_args(Phase))


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


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> MetricsServer:  # noqa: S104 - pods serve all
    """Serve ``registry`` at ``http://addr:port/metrics`` from a daemon thread."""
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server=server, thread=thread)


def observe_votes(namespace: str, name: str, challenger: int, champion: int, ties: int) -> None:
    """Publish an experiment's cumulative vote counts; counters grow by the increase since last time.

    A count lower than the previous one means a new test started (votes are never carried over), so
    the counter grows by the whole new count.
    """
    counts: dict[Side, int] = {"challenger": challenger, "champion": champion, "tie": ties}
    with _lock:
        previous = _last_votes.get((namespace, name), {})
        for side, count in counts.items():
            before = previous.get(side, 0)
            increase = count - before if count >= before else count
            if increase:
                VOTES.labels(namespace, name, side).inc(increase)
            else:
                VOTES.labels(namespace, name, side)  # expose a zero series from the first look
            EXPERIMENT_VOTES.labels(namespace, name, side).set(count)
        _last_votes[(namespace, name)] = counts


def observe_evidence(namespace: str, name: str, lower: float, upper: float, p_value: float) -> None:
    """Publish the confidence sequence for P(challenger preferred) and the always-valid p-value."""
    WIN_RATE_LOWER.labels(namespace, name).set(lower)
    WIN_RATE_UPPER.labels(namespace, name).set(upper)
    P_VALUE.labels(namespace, name).set(p_value)


def record_decision(outcome: str) -> None:
    """Count one decision of a test: ``challenger``, ``champion``, ``no_winner`` or ``equivalent``."""
    DECISIONS.labels(outcome).inc()


def record_promotion(outcome: str) -> None:
    """Count one concluded test by its outcome.

    ``challenger`` (promoted), ``champion`` (kept), ``no_winner`` or ``equivalent`` (champion kept).
    """
    PROMOTIONS.labels(outcome).inc()


def record_delivery(mode: str, result: str) -> None:
    """Count one config delivery: mode ``configmap`` or ``git``, result ``changed``, ``unchanged`` or ``failed``."""
    DELIVERIES.labels(mode, result).inc()


def record_evaluation(result: str, rate: float | None = None, *, namespace: str = "", name: str = "") -> None:
    """Count one finished evaluation run; publish its challenger-better rate for the experiment when known.

    ``result``: ``passed`` / ``failed`` (against the threshold), ``completed`` (no threshold) or ``error``
    (the run itself failed). ``handlers/observe.py`` calls this once per run, when status records its end.
    """
    EVALUATION_RUNS.labels(result).inc()
    if rate is not None:
        EVALUATION_BETTER.labels(namespace, name).set(rate)


def record_backend_error(kind: str) -> None:
    """Count one failed backend request, kind: ``unreachable``, ``http_4xx``, ``http_5xx``, ``protocol``, ``stream``."""
    BACKEND_ERRORS.labels(kind).inc()


@contextmanager
def time_backend_poll(endpoint: str) -> Iterator[None]:
    """Time a backend request (also when it raises) under the path template ``endpoint``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        BACKEND_POLL.labels(endpoint).observe(time.perf_counter() - start)


@contextmanager
def time_reconcile() -> Iterator[None]:
    """Time one reconciliation (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        RECONCILE.observe(time.perf_counter() - start)


def set_phase_counts(counts: Mapping[str, int]) -> None:
    """Publish how many experiments are in each phase; phases missing from ``counts`` show 0."""
    with _lock:
        _phases_shown.update(counts)
        for phase in sorted(_phases_shown):
            EXPERIMENTS.labels(phase).set(counts.get(phase, 0))


def forget_experiment(namespace: str, name: str) -> None:
    """Drop every series of a deleted experiment."""
    with _lock:
        _last_votes.pop((namespace, name), None)
        for metric in _PER_EXPERIMENT:
            metric.remove_by_labels({"namespace": namespace, "name": name})


def forget_all_experiments() -> None:
    """Drop the series of every experiment (an operator starting again knows none yet)."""
    with _lock:
        _last_votes.clear()
        for metric in _PER_EXPERIMENT:
            metric.clear()


def _zero_known_series() -> None:
    for outcome in DECISION_OUTCOMES:
        DECISIONS.labels(outcome)
        PROMOTIONS.labels(outcome)
    for mode in DELIVERY_MODES:
        for result in DELIVERY_RESULTS:
            DELIVERIES.labels(mode, result)
    for result in EVALUATION_RESULTS:
        EVALUATION_RUNS.labels(result)
    for kind in BACKEND_ERROR_KINDS:
        BACKEND_ERRORS.labels(kind)


_zero_known_series()
