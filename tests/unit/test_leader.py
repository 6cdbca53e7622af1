"""Leader election, the pure part (``core.leader``): given the lease as last seen and now, create, take, renew or wait.

The rules are client-go's: expiry counts on the candidate's own clock from when it last saw the record change
(never from the holder's ``renewTime``), a holder stops acting after the renew deadline, which comes before the
lease duration, and a released lease (no holder) is taken at once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canopy_operator.core.leader import (
    JITTER,
    RELEASED_DURATION,
    LeaseRecord,
    Observation,
    Timing,
    decide,
    observe,
    release,
    renew_budget,
    retry_delay,
    still_leading,
)
from canopy_operator.service.settings import Settings, SettingsError

T = Timing()  # 15 s lease, 10 s renew deadline, 2 s retry
WALL = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ME, OTHER = "pod-a_0001", "pod-b_0002"


def held_by(holder: str | None, *, transitions: int = 3, duration: int | None = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, WALL, WALL, transitions)


def test_the_default_timing_is_client_gos() -> None:
    assert (T.lease_duration, T.renew_deadline, T.retry) == (15, 10, 2)
    assert T.problem() is None


@pytest.mark.parametrize(
    ("timing", "words"),
    [
        (Timing(10, 10, 2), "longer than the renew deadline"),
        (Timing(15, 20, 2), "longer than the renew deadline"),
        (Timing(15, 2, 2), "1.2 x the retry period"),
        (Timing(15, 10, 0), "at least 1 second"),
    ],
)
def test_a_timing_where_a_lost_leader_could_overlap_the_next_is_refused(timing: Timing, words: str) -> None:
    problem = timing.problem()
    assert problem is not None
    assert words in problem


def test_no_lease_yet_is_created_held_by_us() -> None:
    decision = decide(ME, None, now=100.0, wall=WALL, timing=T)
    assert decision.action == "create"
    assert decision.record == LeaseRecord(ME, 15, WALL, WALL, 0)


def test_our_own_lease_is_renewed_keeping_when_it_was_acquired() -> None:
    acquired = WALL - timedelta(minutes=5)
    record = LeaseRecord(ME, 15, acquired, acquired, 4)
    later = WALL + timedelta(seconds=2)
    decision = decide(ME, Observation(record, since=0.0), now=1000.0, wall=later, timing=T)
    assert decision.action == "renew"
    assert decision.record == LeaseRecord(ME, 15, acquired, later, 4)


def test_a_lease_held_by_another_waits_until_it_expires_on_our_clock() -> None:
    seen = Observation(held_by(OTHER), since=100.0)
    assert decide(ME, seen, now=100.0, wall=WALL, timing=T).action == "wait"
    assert decide(ME, seen, now=114.9, wall=WALL, timing=T).action == "wait"
    waiting = decide(ME, seen, now=110.0, wall=WALL, timing=T)
    assert waiting.record is None
    assert OTHER in waiting.reason
    assert "expires in 5s" in waiting.reason
    taken = decide(ME, seen, now=115.0, wall=WALL, timing=T)
    assert taken.action == "acquire"
    assert taken.record == LeaseRecord(ME, 15, WALL, WALL, 4)  # one more transition
    assert "did not renew it for 15s" in taken.reason


def test_expiry_ignores_the_holders_renew_time_so_clock_skew_does_not_matter() -> None:
    """A holder whose clock is an hour behind wrote an old renewTime: still held while it keeps renewing."""
    skewed = replace(held_by(OTHER), renewed=WALL - timedelta(hours=1))
    assert decide(ME, Observation(skewed, since=50.0), now=51.0, wall=WALL, timing=T).action == "wait"


def test_the_clock_restarts_whenever_the_lease_was_written() -> None:
    first = observe(None, held_by(OTHER), "7", now=10.0)
    same = observe(first, held_by(OTHER), "7", now=20.0)
    assert same.since == 10.0
    renewed = observe(same, replace(held_by(OTHER), renewed=WALL + timedelta(seconds=2)), "8", now=24.0)
    assert renewed.since == 24.0
    assert decide(ME, renewed, now=30.0, wall=WALL, timing=T).action == "wait"  # 6 s after the renewal was seen
    assert decide(ME, same, now=30.0, wall=WALL, timing=T).action == "acquire"  # 20 s without a change
    rewritten = observe(same, held_by(OTHER), "9", now=26.0)  # the same record written again is a renewal too
    assert rewritten.since == 26.0


def test_the_holders_stated_duration_wins_over_ours() -> None:
    seen = Observation(held_by(OTHER, duration=60), since=0.0)
    assert decide(ME, seen, now=30.0, wall=WALL, timing=T).action == "wait"
    assert decide(ME, seen, now=60.0, wall=WALL, timing=T).action == "acquire"
    unstated = Observation(held_by(OTHER, duration=None), since=0.0)
    assert decide(ME, unstated, now=14.0, wall=WALL, timing=T).action == "wait"
    assert decide(ME, unstated, now=15.0, wall=WALL, timing=T).action == "acquire"


@pytest.mark.parametrize("holder", [None, ""])
def test_a_released_lease_is_taken_at_once(holder: str | None) -> None:
    seen = Observation(held_by(holder, duration=RELEASED_DURATION), since=100.0)
    decision = decide(ME, seen, now=100.0, wall=WALL, timing=T)
    assert decision.action == "acquire"
    assert decision.record == LeaseRecord(ME, 15, WALL, WALL, 4)
    assert decision.reason == "released"


def test_release_gives_up_only_our_own_lease() -> None:
    mine = held_by(ME)
    later = WALL + timedelta(seconds=30)
    assert release(mine, ME, later) == LeaseRecord(None, RELEASED_DURATION, WALL, later, 3)
    assert release(held_by(OTHER), ME, later) is None
    assert release(held_by(None), ME, later) is None


def test_a_holder_stops_acting_at_the_renew_deadline_before_anyone_may_take_over() -> None:
    assert still_leading(last_renewed=100.0, now=109.9, timing=T)
    assert not still_leading(last_renewed=100.0, now=110.0, timing=T)
    assert renew_budget(100.0, 104.0, T) == pytest.approx(6.0)
    assert renew_budget(100.0, 111.0, T) < 0


@given(
    renewed_at=st.floats(0, 1e6, allow_nan=False),
    seen_after=st.floats(0, 30, allow_nan=False),
    duration=st.integers(3, 120),
    deadline_gap=st.integers(1, 60),
)
def test_never_two_leaders(renewed_at: float, seen_after: float, duration: int, deadline_gap: int) -> None:
    """The holder last wrote at ``renewed_at`` (its clock); a candidate saw that record ``seen_after`` later (its
    clock, which runs at the same rate). Whenever the candidate may take the lease, the holder has stopped."""
    timing = Timing(lease_duration=duration + deadline_gap, renew_deadline=duration, retry=1)
    if timing.problem() is not None:
        return
    seen = Observation(held_by(OTHER, duration=timing.lease_duration), since=renewed_at + seen_after)
    for later in (0.0, 1.0, duration - 0.01, duration, timing.lease_duration - 0.01, timing.lease_duration, 1e3):
        now = renewed_at + later
        if decide(ME, seen, now, WALL, timing).action == "acquire":
            assert not still_leading(renewed_at, now, timing)


@pytest.mark.parametrize(("u", "delay"), [(0.0, 2.0), (0.5, 2.0 * (1 + JITTER / 2)), (1.0, 2.0 * (1 + JITTER))])
def test_candidates_retry_after_a_jittered_period(u: float, delay: float) -> None:
    assert retry_delay(T, u) == pytest.approx(delay)


def test_settings_off_by_default_and_read_from_the_environment() -> None:
    default = Settings.from_env({})
    assert default.leader_election is False
    assert default.leader_election_namespace is None
    assert default.leader_election_lease == "canopy-operator"
    assert default.leader_timing == Timing()
    pod = Settings.from_env({"CANOPY_LEADER_ELECTION": "true", "POD_NAMESPACE": "canopy-system"})
    assert pod.leader_election is True
    assert pod.leader_election_namespace == "canopy-system"
    chosen = Settings.from_env(
        {
            "POD_NAMESPACE": "canopy-system",
            "CANOPY_LEADER_ELECTION_NAMESPACE": "elsewhere",
            "CANOPY_LEADER_ELECTION_LEASE": "team-a-canopy-operator",
            "CANOPY_LEADER_ELECTION_LEASE_DURATION": "30",
            "CANOPY_LEADER_ELECTION_RENEW_DEADLINE": "20",
            "CANOPY_LEADER_ELECTION_RETRY_PERIOD": "4",
        }
    )
    assert chosen.leader_election_namespace == "elsewhere"
    assert chosen.leader_election_lease == "team-a-canopy-operator"
    assert chosen.leader_timing == Timing(30, 20, 4)


def test_settings_refuse_a_timing_that_could_overlap() -> None:
    with pytest.raises(SettingsError, match="longer than the renew deadline"):
        Settings.from_env({"CANOPY_LEADER_ELECTION_RENEW_DEADLINE": "15"})
    with pytest.raises(SettingsError, match="is not true or false"):
        Settings.from_env({"CANOPY_LEADER_ELECTION": "maybe"})
