"""Acting on an experiment in the pure core: abort, suspend's phase, shadow decisions, the trajectory, progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import (
    TRAJECTORY_LIMIT,
    ConfidenceSequence,
    DeliveryStatus,
    Evidence,
    OriginalConfig,
    PromptExperimentStatus,
    VoteCounts,
)
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.stats import Assessment
from canopy_operator.core.status import PassFindings, progress_column, settle

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CHAMPION = "Summarize the text:"
CHALLENGER = "Summarize briefly:"


def spec(**extra: object) -> PromptExperimentSpec:
    body: dict[str, object] = {"challenger": {"prompt": CHALLENGER}, **extra}
    return PromptExperimentSpec.model_validate(body)


def running(s: PromptExperimentSpec, **votes: int) -> PromptExperimentStatus:
    st = lc.start_test(s, PromptExperimentStatus(), CHAMPION, NOW)
    original = OriginalConfig(prompt=CHAMPION, feedback_enabled=False, ab_testing_enabled=False)
    decisive = votes.get("challenger_wins", 0) + votes.get("champion_wins", 0)
    return st.model_copy(
        update={
            "original": original,
            "votes": VoteCounts(**votes),
            "evidence": Evidence(
                decisive_votes=decisive, p_value=0.2, confidence_sequence=ConfidenceSequence(lower=0.41, upper=0.93)
            ),
            "delivery": DeliveryStatus(verified_at=NOW),
            "phase": "Running",
        }
    )


def assessment(decisive: int, decision: str = "continue", lower: float = 0.2, upper: float = 0.9) -> Assessment:
    return Assessment(
        decisive_votes=decisive,
        e_value=1.0,
        max_e_value=1.0,
        p_value=0.5,
        cs_lower=lower,
        cs_upper=upper,
        decision=decision,  # type: ignore[arg-type]  # one of the decisions
        reason="",
    )


def test_abort_records_a_pending_outcome_that_delivers_the_champion_alone() -> None:
    s = spec(abort=True)
    st = lc.abort(s, running(s, challenger_wins=7, champion_wins=3), NOW)
    pending = st.pending_promotion
    assert pending is not None
    assert (pending.outcome, pending.summary) == (
        "aborted",
        "aborted by spec.abort after 7 challenger, 3 champion, 0 tie votes (p = 0.2); champion kept",
    )
    assert st.original is not None
    keys = lc.desired_keys(s, st, st.original)
    assert keys is not None
    assert (keys.prompt, keys.prompt_b, keys.ab_testing_enabled) == (CHAMPION, None, False)
    done = lc.conclude(st, "rev-1", NOW)
    assert (done.phase, done.winner, done.promotions[-1].outcome, done.pending_promotion) == (
        "Aborted",
        "none",
        "aborted",
        None,
    )
    assert lc.outcome_of(done) == "aborted"
    assert lc.abort(s, done, NOW) is done  # once aborted, nothing more happens
    settled = settle(done, PassFindings(), 2, NOW)
    assert (settled.phase, settled.progress) == ("Aborted", "aborted")
    assert settled.message.startswith("aborted by spec.abort")


def test_abort_is_a_no_op_without_the_flag_or_after_a_decision() -> None:
    s = spec()
    st = running(s)
    assert lc.abort(s, st, NOW) is st
    decided = lc.apply_assessment(s, running(s, challenger_wins=40), assessment(40, "challenger"), 1, NOW)
    assert decided.pending_promotion is not None
    assert lc.abort(spec(abort=True), decided, NOW) is decided  # the recorded decision stands


def test_a_test_after_an_abort_records_it_as_aborted_in_history() -> None:
    s = spec(abort=True)
    done = settle(lc.conclude(lc.abort(s, running(s), NOW), "rev", NOW), PassFindings(), 1, NOW)
    other = spec(challenger={"prompt": "Another challenger:"})
    again = lc.start_test(other, done, CHAMPION, NOW)
    assert again.test_history[-1].result == "aborted"
    assert again.trajectory == []


def test_suspended_is_its_own_phase_and_says_what_is_kept() -> None:
    st = running(spec(), challenger_wins=12, champion_wins=6).model_copy(update={"suspended_at": NOW})
    settled = settle(st, PassFindings(suspended=True, degraded=("X", "y")), 1, NOW)
    assert settled.phase == "Suspended"
    assert settled.message == (
        "suspended by spec.suspend since 2026-11-30T12:00:00Z: no polling, no writes; "
        "18/30 decisive votes, CS [0.41, 0.93] kept"
    )
    assert settled.progress == "18/30 votes"


def test_running_message_and_progress_show_the_votes_toward_min_votes() -> None:
    settled = settle(running(spec(), challenger_wins=12, champion_wins=6), PassFindings(), 1, NOW)
    assert settled.message == "collecting: 18/30 decisive votes, CS [0.41, 0.93]"
    assert settled.progress == "18/30 votes"
    assert progress_column(settled, "AwaitingApproval") == "awaiting approval"


def test_shadow_decides_without_an_approval_or_a_gate_and_claims_no_promotion() -> None:
    s = spec(
        delivery={"mode": "Shadow"},
        promotion={"policy": "Manual"},
        evaluation={"enabled": True, "gatePromotion": True},
    )
    st = lc.apply_assessment(s, running(s, challenger_wins=40), assessment(40, "challenger"), 1, NOW)
    assert st.pending_promotion is not None
    assert st.pending_promotion.outcome == "challenger"
    done = settle(lc.conclude(st, lc.SHADOW_REVISION, NOW), PassFindings(), 1, NOW)
    assert done.phase == "Concluded"
    promoted = next(c for c in done.conditions if c.type == "Promoted")
    assert (promoted.status, promoted.reason) == ("False", "NotPromoted")
    manual = spec(promotion={"policy": "Manual"})
    held = lc.apply_assessment(manual, running(manual, challenger_wins=40), assessment(40, "challenger"), 1, NOW)
    assert held.pending_promotion is None  # outside shadow, Manual still waits for the human


def test_the_trajectory_grows_when_votes_move_and_stays_bounded_with_its_ends() -> None:
    st = running(spec())
    st = lc.record_trajectory(st, assessment(0, lower=0.0, upper=1.0), NOW)
    same = lc.record_trajectory(st, assessment(0), NOW + timedelta(seconds=30))
    assert same is st
    for votes in range(1, 500):
        at = NOW + timedelta(seconds=votes)
        st = lc.record_trajectory(st, assessment(votes, lower=0.5 - 1 / (votes + 2), upper=0.5 + 1 / (votes + 2)), at)
    points = st.trajectory
    assert len(points) <= TRAJECTORY_LIMIT
    assert points[0].decisive_votes == 0
    assert points[-1].decisive_votes == 499
    assert [p.decisive_votes for p in points] == sorted({p.decisive_votes for p in points})
    assert all(0 <= p.lower <= p.upper <= 1 for p in points)
