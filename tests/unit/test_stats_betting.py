"""The betting method: hand-checkable wealth on small paths, its validity as a bet, and docs/decision-rule.md's
golden table for it."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from canopy_operator.core.stats import (
    BETTING_EDGES,
    BETTING_PLUG_IN_A,
    BETTING_PLUG_IN_WEIGHT,
    BETTING_WEIGHTS,
    TestSettings,
    assess,
    betting_bet,
    betting_confidence_sequence,
    log_betting,
)

BETTING = TestSettings("betting", alpha=0.05, tau=0.1, min_votes=30, max_votes=5000, equivalence_delta=None)
MSPRT = TestSettings("msprt", alpha=0.05, tau=0.1, min_votes=30, max_votes=5000, equivalence_delta=None)

# w_B, w_A, decision, W_n, CS lower, CS upper: copied verbatim from docs/decision-rule.md.
GOLDEN = [
    (25, 5, "challenger", "41.043", "0.5185", "0.9800"),
    (24, 6, "challenger", "20.200", "0.5003", "0.9637"),
    (23, 7, "continue", "10.396", "0.4803", "0.9435"),
    (66, 34, "challenger", "39.409", "0.5110", "0.7902"),
    (65, 35, "challenger", "23.104", "0.5024", "0.7803"),
    (64, 36, "continue", "14.050", "0.4938", "0.7704"),
    (60, 40, "continue", "2.5770", "0.4578", "0.7316"),
    (122, 78, "challenger", "34.956", "0.5065", "0.7072"),
    (120, 80, "continue", "15.982", "0.4972", "0.6972"),
    (34, 66, "champion", "39.409", "0.2098", "0.4890"),
    (510, 490, "continue", "0.0255", "0.4515", "0.5683"),
    (2620, 2380, "no_winner", "2.8806", "0.4963", "0.5516"),
    (2500, 2500, "no_winner", "0.0034", "0.4706", "0.5294"),
]

# Challenger wins needed to promote at n decisive votes (the default mSPRT's in the comment).
NEEDED = {30: 24, 50: 36, 100: 65, 200: 121, 500: 285, 1000: 551, 5000: 2634}  # mSPRT: 25 37 66 122 285 550 2620


def _as_given(value: float, given: str) -> str:
    decimals = len(given.split(".")[1]) if "." in given else 0
    return f"{value:.{decimals}f}"


def _wealth(w_b: int, w_a: int) -> float:
    return math.exp(log_betting(w_b, w_a))


def _exact_wealth(w_b: int, w_a: int) -> Fraction:
    """W_n in rational arithmetic, straight from the definition (constant bettors and the plug-in bettor)."""
    total = Fraction(0)
    for delta, weight in zip(BETTING_EDGES, BETTING_WEIGHTS, strict=True):
        stake, share = Fraction(str(2 * delta)), Fraction(str(weight))
        total += share / 2 * ((1 + stake) ** w_b * (1 - stake) ** w_a + (1 - stake) ** w_b * (1 + stake) ** w_a)
    a = Fraction(str(BETTING_PLUG_IN_A))
    plug_in, b, c = Fraction(1), 0, 0
    for challenger in [True] * w_b + [False] * w_a:  # the plug-in bettor's wealth: the product of its bets
        bet = (b - c) / (b + c + 2 * a)
        plug_in *= 1 + bet if challenger else 1 - bet
        b, c = b + challenger, c + (not challenger)
    return total + Fraction(str(BETTING_PLUG_IN_WEIGHT)) * plug_in


def test_shares_add_up_to_one_and_stakes_stay_below_whole_wealth() -> None:
    assert math.fsum(BETTING_WEIGHTS) + BETTING_PLUG_IN_WEIGHT == pytest.approx(1.0, abs=1e-12)
    assert all(0 < 2 * delta < 1 for delta in BETTING_EDGES)


def test_wealth_matches_hand_computation_when_first_votes() -> None:
    # One vote: every bettor has a mirrored twin and the plug-in bettor starts at 0, so the fund bets nothing.
    assert _wealth(0, 0) == pytest.approx(1.0, abs=1e-15)
    assert _wealth(1, 0) == pytest.approx(1.0, abs=1e-15)
    # Two votes: sum_k pi_k (1 + 4 delta_k^2) + pi_0 * 2(a+1)/(2a+1) = 0.95 + 0.05212 + 0.05 * 26/25.
    assert _wealth(2, 0) == pytest.approx(1.05412, abs=1e-12)
    # Split: sum_k pi_k (1 - 4 delta_k^2) + pi_0 * 2a/(2a+1) = 0.95 - 0.05212 + 0.05 * 24/25.
    assert _wealth(1, 1) == pytest.approx(0.94588, abs=1e-12)
    # Three: sum_k pi_k (1 + 12 delta_k^2) + pi_0 * 8 a(a+1)(a+2) / (2a(2a+1)(2a+2)) = 1.10636 + 0.056.
    assert _wealth(3, 0) == pytest.approx(1.16236, abs=1e-12)


@pytest.mark.parametrize(("w_b", "w_a"), [(0, 0), (3, 1), (25, 5), (17, 23), (40, 0)])
def test_wealth_matches_exact_rational_when_small_counts(w_b: int, w_a: int) -> None:
    assert log_betting(w_b, w_a) == pytest.approx(math.log(_exact_wealth(w_b, w_a)), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("w_b", "w_a"), [(0, 0), (1, 0), (5, 9), (66, 34), (2500, 2500), (3000, 1000)])
def test_wealth_is_fair_bet_when_no_difference(w_b: int, w_a: int) -> None:
    """A martingale under p = 1/2: the two next outcomes average to the wealth now."""
    now = log_betting(w_b, w_a)
    up, down = log_betting(w_b + 1, w_a) - now, log_betting(w_b, w_a + 1) - now
    assert (math.exp(up) + math.exp(down)) / 2 == pytest.approx(1.0, rel=1e-9)


def test_stepwise_bets_reproduce_wealth_and_never_go_broke_when_random_path() -> None:
    rng = random.Random(7)
    for p in (0.5, 0.7, 0.2):
        w_b = w_a = 0
        log_wealth = 0.0
        for _ in range(800):
            bet = betting_bet(w_b, w_a)  # chosen before the vote: predictable
            assert -1.0 < bet < 1.0
            challenger = rng.random() < p
            log_wealth += math.log1p(bet if challenger else -bet)
            w_b, w_a = w_b + challenger, w_a + (not challenger)
            assert log_wealth == pytest.approx(log_betting(w_b, w_a), abs=1e-9)


def test_wealth_ignores_vote_order_when_batch_reordered() -> None:
    """A recounted window whose internal order is unknown gives the same e-value in any order."""
    votes = [True] * 30 + [False] * 12
    orders = [votes, list(reversed(votes)), random.Random(3).sample(votes, len(votes))]
    finals = []
    for order in orders:
        w_b = w_a = 0
        log_wealth = 0.0
        for challenger in order:
            bet = betting_bet(w_b, w_a)
            log_wealth += math.log1p(bet if challenger else -bet)
            w_b, w_a = w_b + challenger, w_a + (not challenger)
        finals.append(log_wealth)
    assert finals == pytest.approx([log_betting(30, 12)] * 3, abs=1e-9)


@pytest.mark.parametrize(("w_b", "w_a", "decision", "e_value", "lower", "upper"), GOLDEN)
def test_golden_row_matches_decision_rule_when_betting(
    w_b: int, w_a: int, decision: str, e_value: str, lower: str, upper: str
) -> None:
    a = assess(BETTING, w_b, w_a)
    assert (a.decision, _as_given(a.e_value, e_value)) == (decision, e_value)
    assert (_as_given(a.cs_lower, lower), _as_given(a.cs_upper, upper)) == (lower, upper)


@pytest.mark.parametrize(("n", "needed"), sorted(NEEDED.items()))
def test_challenger_wins_needed_match_decision_rule_when_betting(n: int, needed: int) -> None:
    assert assess(BETTING, needed, n - needed).decision == "challenger"
    assert assess(BETTING, needed - 1, n - needed + 1).decision != "challenger"


def test_betting_decides_one_win_earlier_than_msprt_when_typical_golden_rows() -> None:
    for w_b, w_a in [(24, 6), (65, 35), (121, 79)]:
        assert (assess(BETTING, w_b, w_a).decision, assess(MSPRT, w_b, w_a).decision) == ("challenger", "continue")


def test_interval_excludes_half_exactly_when_wealth_reaches_threshold() -> None:
    for n in range(1, 200):
        for w_b in range(n + 1):
            lower, upper = betting_confidence_sequence(0.05, w_b, n - w_b)
            decided = log_betting(w_b, n - w_b) >= math.log(20)
            assert decided == (not lower < 0.5 < upper), (w_b, n)


def test_interval_is_whole_at_start_and_shrinks_when_votes_accumulate() -> None:
    assert betting_confidence_sequence(0.05, 0, 0) == (0.0, 1.0)
    widths = []
    for k in (1, 3, 10, 30, 100, 1000, 10_000):
        lower, upper = betting_confidence_sequence(0.05, 6 * k, 4 * k)
        assert lower < 0.6 < upper
        widths.append(upper - lower)
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < 0.02


def test_interval_holds_half_until_enough_votes_when_even() -> None:
    for n in (0, 2, 10, 100, 10_000):
        lower, upper = betting_confidence_sequence(0.05, n // 2, n // 2)
        assert lower < 0.5 < upper


def test_p_value_is_running_min_along_a_path_when_betting() -> None:
    rng = random.Random(11)
    w_b = w_a = 0
    running, last_p = 1.0, 1.0
    for _ in range(600):
        challenger = rng.random() < 0.56
        w_b, w_a = w_b + challenger, w_a + (not challenger)
        a = assess(BETTING, w_b, w_a, prev_max_e_value=running)
        assert a.p_value <= last_p
        assert a.p_value == pytest.approx(min(1.0, 1.0 / a.max_e_value))
        running, last_p = a.max_e_value, a.p_value


def test_equivalence_stop_uses_betting_interval_when_delta_given() -> None:
    settings = TestSettings("betting", 0.05, 0.1, 30, 5000, equivalence_delta=0.1)
    assert assess(settings, 510, 490).decision == "equivalent"
    assert assess(settings, 60, 40).decision == "continue"


def test_ties_never_reach_the_fund_and_sides_mirror_when_swapped() -> None:
    a, b = assess(BETTING, 66, 34), assess(BETTING, 34, 66)
    assert (a.decision, b.decision) == ("challenger", "champion")
    assert a.e_value == pytest.approx(b.e_value, rel=1e-12)
    assert a.cs_lower == pytest.approx(1 - b.cs_upper, abs=1e-12)


def test_million_votes_stay_finite_when_betting() -> None:
    for w_b, w_a in [(1_000_000, 0), (0, 1_000_000), (500_000, 500_000), (600_000, 400_000)]:
        a = assess(TestSettings("betting", 0.05, 0.1, 30, 2_000_000, None), w_b, w_a)
        assert math.isfinite(a.e_value)
        assert 0.0 <= a.cs_lower <= w_b / (w_b + w_a) <= a.cs_upper <= 1.0


def test_a_test_started_with_betting_keeps_betting() -> None:
    """The method pinned in status is the one the pass assesses with (not silently mSPRT)."""
    from datetime import UTC, datetime

    from canopy_operator.api.status import TestIdentity
    from canopy_operator.core.lifecycle import settings_of

    test = TestIdentity(
        id="t",
        started_at=datetime(2026, 11, 29, tzinfo=UTC),
        champion_hash="a",
        challenger_hash="b",
        champion_prompt="p",
        method="betting",
        alpha=0.05,
        tau=0.1,
        min_votes=30,
        max_votes=5000,
    )
    assert settings_of(test).method == "betting"
    assert settings_of(test.model_copy(update={"method": "t-test"})).method == "msprt"
