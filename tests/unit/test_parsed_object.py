"""ParsedObject: a spec or status is parsed again only when its key (generation, resourceVersion) changes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from canopy_operator.core.status import StatusUnreadable, read_status
from canopy_operator.service.parsed import ParsedObject


def test_the_same_version_is_parsed_once_and_a_new_one_again() -> None:
    parsed = ParsedObject()
    first = parsed.get("status", "10", {"phase": "Running"}, read_status)
    again = parsed.get("status", "10", {"phase": "Running"}, read_status)
    assert again is first
    newer = parsed.get("status", "11", {"phase": "Concluded"}, read_status)
    assert newer.phase == "Concluded"
    assert parsed.parses == 2


def test_spec_and_status_are_kept_apart() -> None:
    parsed = ParsedObject()
    calls: list[str] = []

    def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
        calls.append(str(raw))
        return dict(raw)

    parsed.get("spec", ("uid", 1), {"a": 1}, parse)
    parsed.get("status", ("uid", 1), {"b": 2}, parse)  # same key, other part: parsed
    parsed.get("spec", ("uid", 1), {"a": 1}, parse)
    assert calls == ["{'a': 1}", "{'b': 2}"]


def test_a_failed_parse_keeps_nothing_and_no_key_keeps_nothing() -> None:
    parsed = ParsedObject()
    with pytest.raises(StatusUnreadable):
        parsed.get("status", "10", {"votes": {"challengerWins": "many"}}, read_status)
    with pytest.raises(StatusUnreadable):  # parsed again, refused again: never a kept model for a bad status
        parsed.get("status", "10", {"votes": {"challengerWins": "many"}}, read_status)
    parsed.get("status", None, {}, read_status)
    parsed.get("status", None, {}, read_status)
    assert parsed.parses == 4


def test_a_status_is_known_unchanged_only_when_stored_exactly_as_its_model_dumps() -> None:
    """What lets an idle pass skip dumping its whole status (services._stored_as_dumped, issue #20): the stored
    status must be exactly the dump of its parsed model, or the pass writes as before."""
    from canopy_operator.core.status import dump
    from canopy_operator.service.services import _stored_as_dumped

    stored = {"phase": "Running", "message": "collecting", "votes": {"challengerWins": 2}}
    model = read_status(stored)
    canonical = dump(model)
    assert _stored_as_dumped(model, canonical)
    assert not _stored_as_dumped(model, {**canonical, "phase": "Progressing"})  # a field the model has not
    assert not _stored_as_dumped(model, {k: v for k, v in canonical.items() if k != "message"})  # one missing


def test_the_models_are_dropped_between_passes_and_the_small_verdict_is_kept() -> None:
    """Kept while the daemon sleeps, the models were about 28 KiB per experiment (issue #20): only the bool that
    lets an idle pass skip a dump stays."""
    parsed = ParsedObject()
    parsed.get("status", "10", {"phase": "Running"}, read_status)
    parsed.get("spec", ("uid", 1), {"a": 1}, dict)
    parsed.get("status-as-stored", "10", {}, lambda raw: True)
    parsed.end_pass()
    assert parsed.parses == 3
    parsed.get("status", "10", {"phase": "Running"}, read_status)  # parsed again
    parsed.get("spec", ("uid", 1), {"a": 1}, dict)  # parsed again
    assert parsed.get("status-as-stored", "10", {}, lambda raw: False) is True  # kept
    assert parsed.parses == 5


async def test_a_session_drops_its_models_at_the_end_of_each_pass() -> None:
    from canopy_operator.k8s.watched import WatchedReads
    from canopy_operator.service.session import ExperimentSession

    gateway: Any = None
    nothing: Any = lambda spec: None  # noqa: E731 - no backend client is opened in this test
    session = ExperimentSession("ns/exp", nothing, nothing, WatchedReads(gateway))
    session.parsed.get("status", "10", {"phase": "Running"}, read_status)
    await session.end_pass()
    session.parsed.get("status", "10", {"phase": "Running"}, read_status)
    assert session.parsed.parses == 2
