"""The Grafana dashboard reads the operator's metrics as they mean: errors are failures, decisions are marked."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from canopy_operator.telemetry.metrics import DELIVERY_RESULTS, EVALUATION_RESULTS, Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "grafana-dashboard.json"
SELECTOR = re.compile(r"(canopy_operator_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'([a-zA-Z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"')

#: What an Errors query may count: each metric and the one label value that makes a series a failure
#: (None: every series of the metric counts failures).
FAILURES: dict[str, tuple[str, str] | None] = {
    "canopy_operator_backend_errors_total": None,
    "canopy_operator_config_deliveries_total": ("result", "failed"),
    "canopy_operator_evaluation_runs_total": ("result", "error"),  # "failed" is a verdict on the challenger
}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _panel(title: str) -> dict[str, Any]:
    (panel,) = [panel for panel in _dashboard()["panels"] if panel["title"] == title]
    return panel


def _selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Each metric an expression reads, with its label matchers ``(label, operator, value)``."""
    return [(name, MATCHER.findall(matchers or "")) for name, matchers in SELECTOR.findall(expr)]


def _served(name: str, equal: dict[str, str]) -> bool:
    """Whether a fresh operator already serves a series of ``name`` with these label values."""
    samples = [sample for family in Metrics().registry.collect() for sample in family.samples]
    return any(s.name == name and equal.items() <= s.labels.items() for s in samples)


def test_errors_panel_counts_only_failures() -> None:
    exprs = [target["expr"] for target in _panel("Errors")["targets"]]
    read = [selector for expr in exprs for selector in _selectors(expr)]

    assert {name for name, _ in read} == set(FAILURES)  # backend errors, failed deliveries, errored runs
    assert "failed" in DELIVERY_RESULTS
    assert "error" in EVALUATION_RESULTS
    for name, matchers in read:
        failure = FAILURES[name]
        if failure is not None:
            assert [m for m in matchers if m[0] == failure[0]] == [(failure[0], "=", failure[1])], name
        assert all(op == "=" for _, op, _ in matchers), f"{name}: only exact matches keep the panel to failures"
        assert _served(name, {label: value for label, _, value in matchers}), name


def test_decision_annotation_marks_the_confidence_sequence_panel() -> None:
    dashboard = _dashboard()
    confidence = _panel("Challenger win rate: always-valid confidence sequence")
    decisions = [a for a in dashboard["annotations"]["list"] if a.get("name") == "Decisions"]
    assert len(decisions) == 1
    annotation = decisions[0]
    expr = annotation.get("target", {}).get("expr") or annotation["expr"]

    assert annotation["enable"] is True
    assert annotation["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert annotation["filter"] == {"exclude": False, "ids": [confidence["id"]]}
    assert annotation["useValueForTime"] is True  # the series' value is the time of the decision ...
    assert expr.replace(" ", "").endswith("*1000")  # ... in milliseconds, as Grafana reads it
    assert [name for name, _ in _selectors(expr)] == ["canopy_operator_experiment_decided_timestamp_seconds"]
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"namespace", "experiment"} <= variables
    assert 'namespace=~"$namespace"' in expr
    assert 'name=~"$experiment"' in expr
    assert "{{outcome}}" in annotation["titleFormat"]


def test_decision_annotation_reads_a_series_a_decision_sets() -> None:
    metrics = Metrics()
    metrics.record_decision("challenger", namespace="ns-a", name="exp", at=1_800_000_000.5)
    labels = {"namespace": "ns-a", "name": "exp", "outcome": "challenger"}
    decided = metrics.sample("canopy_operator_experiment_decided_timestamp_seconds", labels)
    assert decided is not None
    assert decided * 1000 == 1_800_000_000_500  # the annotation's time, in ms
