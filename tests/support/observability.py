"""Scraping the operator's metrics endpoint and reading its JSON log lines, as Prometheus and Loki would."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from canopy_operator.telemetry.logs import JsonHandler, configure_logging

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample served at ``http://127.0.0.1:<port>/metrics``, keyed by (sample name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode("utf-8")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, /, **labels: str) -> float:
    """One sample's value; 0 when it is not served (a counter that has not been created yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def served(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets under which the sample ``name`` is served."""
    return [dict(labels) for sample, labels in samples if sample == name]


class LogCapture:
    """The operator's JSON log output (every line ``configure_logging`` writes)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        """Every line parsed as JSON (a line that is not one JSON object fails the test)."""
        parsed = []
        for line in self.text.splitlines():
            record = json.loads(line)
            assert isinstance(record, dict), line
            parsed.append(record)
        return parsed

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == event]


@contextmanager
def json_logs() -> Iterator[LogCapture]:
    """Install the operator's JSON log handler writing into a buffer; restore the root logger afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    capture = LogCapture()
    configure_logging("INFO", stream=capture.stream)
    try:
        yield capture
    finally:
        root.handlers[:] = [h for h in root.handlers if not isinstance(h, JsonHandler)]
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
