"""ExperimentSession.freshest: a pass starts from the daemon's own last write while the watch still shows a
version that write replaced; from the watch's body otherwise (issue #20: no self-inflicted conflicts)."""

from __future__ import annotations

from typing import Any, cast

from canopy_operator.k8s.gateway import Gateway
from canopy_operator.k8s.watched import WatchedReads
from canopy_operator.service.session import MAX_SUPERSEDED, ExperimentSession


def session() -> ExperimentSession:
    def no_source(_: Any) -> Any:
        raise AssertionError("no backend in these tests")

    return ExperimentSession("ns/exp", no_source, lambda _: None, WatchedReads(cast(Gateway, None)))


def obj(rv: str, phase: str, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv, "generation": generation}, "spec": {}, "status": {"phase": phase}}


def test_before_any_write_the_watch_body_is_used() -> None:
    body = obj("5", "Pending")
    assert session().freshest(body) is body


def test_a_body_the_last_writes_replaced_gives_way_to_the_written_object() -> None:
    s = session()
    first, second = obj("6", "Progressing"), obj("7", "Progressing")
    s.note_write(["5"], first)
    s.note_write(["6"], second)
    assert s.freshest(obj("5", "Pending")) is second  # the watch has delivered neither write yet
    assert s.freshest(obj("6", "Progressing")) is second  # only the first


def test_a_retried_write_replaced_every_version_it_was_tried_on() -> None:
    s = session()
    written = obj("9", "Progressing")
    s.note_write(["5", "8"], written)  # conflict on 5 (Kopf's finalizer made 8), retried on 8
    assert s.freshest(obj("8", "Pending")) is written


def test_a_newer_body_wins_and_a_caught_up_watch_forgets_the_replaced_versions() -> None:
    s = session()
    written = obj("6", "Progressing")
    s.note_write(["5"], written)
    newer = obj("11", "Progressing", generation=2)  # someone edited the spec after our write
    assert s.freshest(newer) is newer
    caught_up = obj("6", "Progressing")
    assert s.freshest(caught_up) is caught_up
    stale = obj("5", "Pending")
    assert s.freshest(stale) is stale  # forgotten once the watch delivered the write: the precondition decides
    assert s._written is None  # nor is the written object kept (issue #20: a whole object per experiment)


def test_the_remembered_versions_are_bounded() -> None:
    s = session()
    for i in range(MAX_SUPERSEDED + 1):
        s.note_write([str(i)], obj(str(i + 1), "Progressing"))
    assert len(s._superseded) <= MAX_SUPERSEDED


def test_a_deferred_status_stands_while_the_stored_status_does_and_is_taken_once() -> None:
    """The status a pass kept after its config write (core/status.defer_write) is taken by the next pass while the
    object stores the status it was kept after: a label or a spec edit leave it standing (the edit is planned
    from it), another status or a deletion do not; taken or not, it is gone afterwards."""
    s = session()
    stored = {"phase": "Progressing"}
    kept = {"phase": "Progressing", "delivery": {"appliedHash": "h"}}
    spec_edited = {**obj("7", "Progressing", generation=2), "metadata": {"resourceVersion": "7", "generation": 2}}
    for body, stands in [
        (obj("6", "Progressing"), True),
        (spec_edited, True),
        (obj("7", "Running"), False),  # someone else wrote the status
        ({**obj("6", "Progressing"), "metadata": {"resourceVersion": "6", "deletionTimestamp": "now"}}, False),
    ]:
        s.defer(kept, stored)
        taken = s.take_deferred(body)
        assert (taken is not None) is stands, body
        if taken is not None:
            assert taken.status == kept
        assert s.take_deferred(body) is None  # taken once
