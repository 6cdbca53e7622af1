"""The pure status machine: cadence, merge patch, unreadable status."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from canopy_operator.core.status import (
    DEFER_LIMIT_SECONDS,
    PROGRESS_POLL_SECONDS,
    ROLLOUT_POLL_SECONDS,
    ROLLOUT_RECHECK_SECONDS,
    PassFindings,
    StatusUnreadable,
    backoff,
    defer_write,
    merge_patch,
    next_poll,
    read_status,
    unreadable_status,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_a_fresh_rollout_is_looked_at_again_soon_and_only_while_in_flight() -> None:
    fresh = PassFindings(fresh_rollout=True)
    assert next_poll("Progressing", fresh, 30.0) == ROLLOUT_RECHECK_SECONDS
    assert next_poll("Progressing", PassFindings(), 30.0) == PROGRESS_POLL_SECONDS
    assert next_poll("Running", fresh, 30.0) == 30.0
    assert next_poll("Progressing", PassFindings(degraded=("X", "y"), fresh_rollout=True), 30.0) == 30.0
    assert next_poll("Progressing", PassFindings(awaiting_review=True), 30.0) == 30.0


def test_an_unfinished_rollout_is_waited_for_by_its_watch_with_a_slow_poll_as_safety_net() -> None:
    rolling = PassFindings(rolling=True)
    assert next_poll("Progressing", rolling, 30.0) == ROLLOUT_POLL_SECONDS > PROGRESS_POLL_SECONDS
    assert next_poll("Progressing", PassFindings(rolling=True, fresh_rollout=True), 30.0) == ROLLOUT_RECHECK_SECONDS
    assert next_poll("Progressing", rolling, 5.0) == 5.0  # never slower than the interval
    assert next_poll("Running", rolling, 30.0) == 30.0


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(5.0, n) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
    assert backoff(30.0, 20) == 300.0


def test_merge_patch_deletes_with_null_and_leaves_equal_keys_out() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "gone": True}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "added": [1]}
    assert merge_patch(old, new) == {"gone": None, "b": {"d": 4}, "added": [1]}
    assert merge_patch(new, new) == {}


def test_an_unreadable_status_names_its_first_bad_field() -> None:
    with pytest.raises(StatusUnreadable, match=r"status\.votes\.ties"):
        read_status({"votes": {"ties": "three"}})


def test_the_degraded_status_keeps_every_other_field() -> None:
    raw = {"votes": {"ties": "three"}, "test": {"id": "t1"}, "conditions": [{"type": "Ready", "status": "True"}]}
    error = StatusUnreadable("votes.ties", "Input should be a valid integer")
    out = unreadable_status(raw, error, 3, NOW)
    assert (out["votes"], out["test"], out["phase"]) == (raw["votes"], raw["test"], "Degraded")
    assert [c["type"] for c in out["conditions"]] == ["Ready", "Degraded"]
    assert out["conditions"][1]["reason"] == "StatusUnreadable"


@pytest.mark.parametrize(
    ("wrote_intent", "waited", "rolling", "failed", "queued", "kept"),
    [
        (True, None, True, False, False, True),  # the pass that wrote its intent and the config
        (False, None, True, False, False, False),  # nothing kept and nothing written: nothing to keep
        (False, 9.0, True, False, False, True),  # the rollout still runs: it waits on
        (False, DEFER_LIMIT_SECONDS - 0.01, True, False, False, True),
        (False, DEFER_LIMIT_SECONDS, True, False, False, False),  # waited long enough: written
        (False, 9.0, False, False, False, False),  # the rollout finished: written with the outcome
        (True, None, False, False, False, False),
        (True, None, True, True, False, False),  # a failed pass always writes
        (False, 9.0, True, True, False, False),
        (True, None, True, False, True, False),  # a queued notification always writes
        (False, 9.0, True, False, True, False),
        (True, DEFER_LIMIT_SECONDS + 5, True, False, False, True),  # a new intent starts a new wait
    ],
)
def test_a_status_waits_for_its_rollout_within_a_bound_and_never_hides_a_failure(
    wrote_intent: bool, waited: float | None, rolling: bool, failed: bool, queued: bool, kept: bool
) -> None:
    assert defer_write(rolling=rolling, failed=failed, queued=queued, wrote_intent=wrote_intent, waited=waited) is kept
