"""The "report" step of a reconcile pass: Prometheus metrics and JSON log events.

One :class:`Observer` per operator process holds the metrics and what it knows of every experiment (its
phase). A pass opens a :class:`PassWatch` (it snapshots the status the pass starts from and starts the
clock), hands it the :class:`Report` once the status is written, and closes it (the duration is recorded
even when the pass fails). What changed is read from the difference between the two statuses, so a pass
that is repeated after a conflict counts nothing twice. Requests to the vote source are timed by
:meth:`Observer.time_request`, which also counts failures by kind.

Log events (logger ``canopy_operator.events``, one JSON object per line through :mod:`canopy_operator.logs`):
``experiment_started``, ``phase_changed``, ``config_delivered`` / ``config_delivery_failed``,
``votes_synced``, ``decision_made``, ``prompt_promoted`` / ``champion_kept``, ``evaluation_finished`` and
``experiment_deleted``. Prompt texts appear only as ``sha256:`` references.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from canopy_operator.api.status import EvaluationRun, PromptExperimentStatus
from canopy_operator.service.report import Report
from canopy_operator.sources.base import SourceError
from canopy_operator.telemetry.logs import log_event
from canopy_operator.telemetry.metrics import Metrics

log = logging.getLogger("canopy_operator.events")


class Observer:
    """The process's metrics and the phase of every experiment it has seen."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.phases: dict[tuple[str, str], str] = {}
        self.metrics.forget_all_experiments()
        self.metrics.set_phase_counts({})

    def watch(
        self, namespace: str, name: str, body: Mapping[str, Any], before: PromptExperimentStatus | None = None
    ) -> PassWatch:
        """Observe one pass of ``namespace/name`` whose object is ``body`` (``before``: its status, parsed)."""
        return PassWatch(self, namespace, name, body, before)

    def set_phase(self, namespace: str, name: str, phase: str) -> None:
        """Every pass reports its phase; the gauge is recounted only when one changed (recounting all
        experiments on every pass cost O(N) per pass, issue #20)."""
        if self.phases.get((namespace, name)) == phase:
            return
        self.phases[(namespace, name)] = phase
        self.metrics.set_phase_counts(Counter(self.phases.values()))

    def forget(self, namespace: str, name: str) -> None:
        """The experiment is being deleted: drop its series so labels do not pile up."""
        self.phases.pop((namespace, name), None)
        self.metrics.forget_experiment(namespace, name)
        self.metrics.set_phase_counts(Counter(self.phases.values()))
        log_event(log, "experiment_deleted", f"{namespace}/{name}")

    @contextmanager
    def time_request(self, endpoint: str) -> Iterator[None]:
        """Time one request to a vote source by endpoint; count its failure by kind."""
        try:
            with self.metrics.time_backend_poll(endpoint):
                yield
        except SourceError as exc:
            self.metrics.record_backend_error(exc.kind)
            raise


def _status(raw: Mapping[str, Any] | None) -> PromptExperimentStatus:
    try:
        return PromptExperimentStatus.model_validate(dict(raw or {}))
    except ValidationError:
        return PromptExperimentStatus()


def _mode(spec: Mapping[str, Any] | None) -> str:
    delivery = (spec or {}).get("delivery") or {}
    return str(delivery.get("mode") or "ConfigMap").lower()


class PassWatch:
    """Observes one reconcile pass of ``namespace/name`` whose object is ``body``."""

    def __init__(
        self,
        observer: Observer,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        before: PromptExperimentStatus | None = None,
    ) -> None:
        self.observer = observer
        self.metrics = observer.metrics
        self.namespace = namespace
        self.name = name
        self.obj = f"{namespace}/{name}"
        self.before = before if before is not None else _status(body.get("status"))
        self.spec: Mapping[str, Any] = body.get("spec") or {}
        self.started = time.perf_counter()

    def close(self) -> None:
        """Record the pass's duration (call it whether or not the pass succeeded)."""
        self.metrics.reconcile.observe(time.perf_counter() - self.started)

    def report(self, report: Report) -> None:
        """Publish what the finished pass changed: metrics first, then one log line per event."""
        old, new = self.before, report.status
        self._phase(old, new)
        self._test(old, new)
        self._delivery(report)
        self._votes(old, new)
        self._decision(report, new)
        self._promotions(old, new)
        self._evaluations(old, new)

    def _phase(self, old: PromptExperimentStatus, new: PromptExperimentStatus) -> None:
        self.observer.set_phase(self.namespace, self.name, new.phase)
        if new.phase != old.phase:
            level = logging.WARNING if new.phase == "Degraded" else logging.INFO
            log_event(
                log, "phase_changed", self.obj, level=level, phase=new.phase, previous=old.phase, reason=new.message
            )

    def _test(self, old: PromptExperimentStatus, new: PromptExperimentStatus) -> None:
        if new.test is None or (old.test is not None and old.test.id == new.test.id):
            return
        log_event(
            log,
            "experiment_started",
            self.obj,
            test_id=new.test.id,
            superseded=old.test.id if old.test else None,
            champion_prompt=new.test.champion_prompt,
            champion_hash=new.test.champion_hash,
            challenger_hash=new.test.challenger_hash,
            method=new.test.method,
            alpha=new.test.alpha,
            backend=str((self.spec.get("backend") or {}).get("url", "")),
        )

    def _delivery(self, report: Report) -> None:
        if report.delivered is None:
            return
        mode = _mode(self.spec)
        self.metrics.record_delivery(mode, report.delivered)
        if report.delivered == "failed":
            reason = report.status.message
            log_event(log, "config_delivery_failed", self.obj, level=logging.WARNING, mode=mode, reason=reason)
        else:
            d = report.status.delivery
            log_event(log, "config_delivered", self.obj, mode=mode, result=report.delivered, revision=d.revision)

    def _votes(self, old: PromptExperimentStatus, new: PromptExperimentStatus) -> None:
        if new.test is None:
            return
        v, e = new.votes, new.evidence
        self.metrics.observe_votes(self.namespace, self.name, v.challenger_wins, v.champion_wins, v.ties)
        cs = e.confidence_sequence
        self.metrics.observe_evidence(
            self.namespace, self.name, cs.lower if cs else 0.0, cs.upper if cs else 1.0, e.p_value
        )
        same_test = old.test is not None and old.test.id == new.test.id
        before = (old.votes.challenger_wins, old.votes.champion_wins, old.votes.ties) if same_test else (0, 0, 0)
        now = (v.challenger_wins, v.champion_wins, v.ties)
        if now == before:
            return
        log_event(
            log,
            "votes_synced",
            self.obj,
            test_id=new.test.id,
            new_votes=sum(now) - sum(before),
            challenger_wins=v.challenger_wins,
            champion_wins=v.champion_wins,
            ties=v.ties,
            p_value=round(e.p_value, 6),
            confidence_sequence=[cs.lower, cs.upper] if cs else None,
            restarts_detected=new.collection.restarts_detected,
        )

    def _decision(self, report: Report, new: PromptExperimentStatus) -> None:
        if report.decision is None:
            return
        self.metrics.record_decision(report.decision, namespace=self.namespace, name=self.name)
        e, v = new.evidence, new.votes
        log_event(
            log,
            "decision_made",
            self.obj,
            decision=report.decision,
            reason=e.reason,
            challenger_wins=v.challenger_wins,
            champion_wins=v.champion_wins,
            ties=v.ties,
            p_value=round(e.p_value, 6),
            test_id=new.test.id if new.test else None,
        )

    def _promotions(self, old: PromptExperimentStatus, new: PromptExperimentStatus) -> None:
        seen = {record.test_id for record in old.promotions}
        for record in new.promotions:
            if record.test_id in seen:
                continue
            self.metrics.record_promotion(record.outcome)
            event = "prompt_promoted" if record.outcome == "challenger" else "champion_kept"
            log_event(
                log,
                event,
                self.obj,
                outcome=record.outcome,
                test_id=record.test_id,
                promoted_hash=record.promoted_hash,
                challenger_wins=record.challenger_wins,
                champion_wins=record.champion_wins,
                ties=record.ties,
                p_value=round(record.p_value, 6),
                revision=record.revision,
            )

    def _evaluations(self, old: PromptExperimentStatus, new: PromptExperimentStatus) -> None:
        finished = {run.name for run in old.evaluations if run.state != "Running"}
        for run in new.evaluations:
            if run.state == "Running" or run.name in finished:
                continue
            result = evaluation_result(run)
            self.metrics.record_evaluation(result, run.challenger_better_rate, namespace=self.namespace, name=self.name)
            log_event(
                log,
                "evaluation_finished",
                self.obj,
                level=logging.WARNING if result == "error" else logging.INFO,
                evaluation=run.name,
                test_id=run.test_id,
                trigger=run.trigger,
                result=result,
                cases=run.cases,
                scored=run.scored,
                challenger_better_rate=run.challenger_better_rate,
                reason=run.message,
            )


def evaluation_result(run: EvaluationRun) -> str:
    """The ``result`` label of a finished run: passed, failed, completed (no threshold) or error."""
    if run.state == "Failed":
        return "error"
    if run.passed is None:
        return "completed"
    return "passed" if run.passed else "failed"
