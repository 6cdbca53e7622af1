"""The betting method: hand-checkable wealth on small paths, its validity as a bet, and docs/decision-rule.md's
golden tables for it (version 2, the default since the challenger's side got 56 % of the fund, and version 1,
which the tests started before keep)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from canopy_operator.api import status as api_status
from canopy_operator.api.spec import AnalysisSpec, PromptExperimentSpec
from canopy_operator.core.lifecycle import settings_of, start_test
from canopy_operator.core.stats import (
    BETTING_FUNDS,
    BETTING_VERSION,
    BettingFund,
    TestSettings,
    assess,
    betting_bet,
    betting_confidence_sequence,
    log_betting,
)

BETTING = TestSettings("betting", alpha=0.05, tau=0.1, min_votes=30, max_votes=5000, equivalence_delta=None)
BETTING_V1 = TestSettings("betting", 0.05, 0.1, 30, 5000, None, method_version=1)
MSPRT = TestSettings("msprt", alpha=0.05, tau=0.1, min_votes=30, max_votes=5000, equivalence_delta=None)
FUNDS = [BETTING_FUNDS[1], BETTING_FUNDS[2]]

# w_B, w_A, decision, W_n, CS lower, CS upper: copied verbatim from docs/decision-rule.md (version 2).
GOLDEN = [
    (25, 5, "challenger", "32.537", "0.5124", "0.9810"),
    (24, 6, "continue", "17.558", "0.4964", "0.9647"),
    (66, 34, "challenger", "46.387", "0.5137", "0.7881"),
    (65, 35, "challenger", "28.304", "0.5059", "0.7776"),
    (64, 36, "continue", "17.674", "0.4978", "0.7673"),
    (60, 40, "continue", "3.2687", "0.4620", "0.7280"),
    (121, 79, "challenger", "31.183", "0.5054", "0.6990"),
    (120, 80, "challenger", "20.941", "0.5006", "0.6942"),
    (34, 66, "champion", "30.702", "0.2067", "0.4932"),
    (35, 65, "continue", "18.930", "0.2171", "0.5009"),
    (510, 490, "continue", "0.0267", "0.4517", "0.5681"),
    (2620, 2380, "no_winner", "3.0793", "0.4964", "0.5515"),
    (2500, 2500, "no_winner", "0.0017", "0.4694", "0.5306"),
]
# The same for version 1 (shares split evenly between the sides), kept for the tests started with it.
GOLDEN_V1 = [
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

# Wins needed to decide at n decisive votes, version 2: the challenger's, the champion's (mSPRT's in comments).
NEEDED = {30: 25, 50: 36, 100: 65, 200: 120, 500: 284, 1000: 551, 5000: 2633}  # mSPRT: 25 37 66 122 285 550 2620
NEEDED_CHAMPION = {30: 25, 50: 37, 100: 66, 200: 121, 500: 285, 1000: 551, 5000: 2634}
NEEDED_V1 = {30: 24, 50: 36, 100: 65, 200: 121, 500: 285, 1000: 551, 5000: 2634}


def _as_given(value: float, given: str) -> str:
    decimals = len(given.split(".")[1]) if "." in given else 0
    return f"{value:.{decimals}f}"


def _wealth(w_b: int, w_a: int, fund: BettingFund | None = None) -> float:
    return math.exp(log_betting(w_b, w_a, fund))


def _exact_wealth(w_b: int, w_a: int, fund: BettingFund) -> Fraction:
    """W_n in rational arithmetic, straight from the definition (constant bettors and the plug-in bettor)."""
    total = Fraction(0)
    for delta, on_b, on_a in zip(fund.edges, fund.challenger_shares, fund.champion_shares, strict=True):
        stake = Fraction(str(2 * delta))
        total += Fraction(str(on_b)) * (1 + stake) ** w_b * (1 - stake) ** w_a
        total += Fraction(str(on_a)) * (1 - stake) ** w_b * (1 + stake) ** w_a
    a = Fraction(str(fund.plug_in_a))
    plug_in, b, c = Fraction(1), 0, 0
    for challenger in [True] * w_b + [False] * w_a:  # the plug-in bettor's wealth: the product of its bets
        bet = (b - c) / (b + c + 2 * a)
        plug_in *= 1 + bet if challenger else 1 - bet
        b, c = b + challenger, c + (not challenger)
    return total + Fraction(str(fund.plug_in_share)) * plug_in


@pytest.mark.parametrize("fund", FUNDS)
def test_shares_add_up_to_one_and_stakes_stay_below_whole_wealth(fund: BettingFund) -> None:
    shares = (*fund.challenger_shares, *fund.champion_shares, fund.plug_in_share)
    assert math.fsum(shares) == pytest.approx(1.0, abs=1e-12)
    assert all(0 < 2 * delta < 1 for delta in fund.edges)


def test_version_2_gives_the_challengers_side_56_percent_and_version_1_half() -> None:
    assert BETTING_VERSION == 2
    assert math.fsum(BETTING_FUNDS[2].challenger_shares) == pytest.approx(0.56, abs=1e-12)
    assert math.fsum(BETTING_FUNDS[2].champion_shares) == pytest.approx(0.415, abs=1e-12)
    assert BETTING_FUNDS[1].challenger_shares == BETTING_FUNDS[1].champion_shares
    assert math.fsum(BETTING_FUNDS[1].challenger_shares) == pytest.approx(0.475, abs=1e-12)


def test_a_fund_that_does_not_add_up_is_refused() -> None:
    good = BETTING_FUNDS[2]
    with pytest.raises(ValueError, match="add up to 1"):
        BettingFund(good.edges, good.challenger_shares, good.champion_shares, 0.5, 12.0)
    with pytest.raises(ValueError, match="one challenger and one champion share per edge"):
        BettingFund(good.edges, good.challenger_shares[:-1], good.champion_shares, good.plug_in_share, 12.0)
    with pytest.raises(ValueError, match="betting has no version 7"):
        TestSettings("betting", 0.05, 0.1, 30, 5000, None, method_version=7)
    with pytest.raises(ValueError, match="msprt has no version 2"):
        TestSettings("msprt", 0.05, 0.1, 30, 5000, None, method_version=2)


def test_wealth_matches_hand_computation_when_first_votes() -> None:
    # Version 2. First vote: the fund stakes sum_k (c_k - h_k) 2 delta_k = 0.002 - 0.0024 + 0.019 + 0.012 + 0.002
    # = 3.26 % on the challenger (the plug-in bettor starts at 0).
    assert _wealth(0, 0) == pytest.approx(1.0, abs=1e-15)
    assert betting_bet(0, 0) == pytest.approx(0.0326, abs=1e-15)
    assert _wealth(1, 0) == pytest.approx(1.0326, abs=1e-15)
    assert _wealth(0, 1) == pytest.approx(0.9674, abs=1e-15)
    # Two challenger wins: sum_k c_k (1 + 2 delta_k)^2 + h_k (1 - 2 delta_k)^2 + pi_0 * 2(a+1)/(2a+1).
    assert _wealth(2, 0) == pytest.approx(1.109712, abs=1e-12)
    assert _wealth(1, 1) == pytest.approx(0.955488, abs=1e-12)
    assert _wealth(3, 0) == pytest.approx(1.23347424, abs=1e-12)
    # Version 1: every bettor had a mirrored twin, so the first vote moved nothing.
    v1 = BETTING_FUNDS[1]
    assert _wealth(1, 0, v1) == pytest.approx(1.0, abs=1e-15)
    # Two votes: sum_k pi_k (1 + 4 delta_k^2) + pi_0 * 2(a+1)/(2a+1) = 0.95 + 0.05212 + 0.05 * 26/25.
    assert _wealth(2, 0, v1) == pytest.approx(1.05412, abs=1e-12)
    assert _wealth(1, 1, v1) == pytest.approx(0.94588, abs=1e-12)
    assert _wealth(3, 0, v1) == pytest.approx(1.16236, abs=1e-12)


@pytest.mark.parametrize("fund", FUNDS)
@pytest.mark.parametrize(("w_b", "w_a"), [(0, 0), (3, 1), (25, 5), (17, 23), (40, 0), (0, 40)])
def test_wealth_matches_exact_rational_when_small_counts(w_b: int, w_a: int, fund: BettingFund) -> None:
    expected = math.log(_exact_wealth(w_b, w_a, fund))
    assert log_betting(w_b, w_a, fund) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("fund", FUNDS)
@pytest.mark.parametrize(("w_b", "w_a"), [(0, 0), (1, 0), (5, 9), (66, 34), (2500, 2500), (3000, 1000), (10, 400)])
def test_wealth_is_fair_bet_when_no_difference(w_b: int, w_a: int, fund: BettingFund) -> None:
    """A martingale under p = 1/2: the two next outcomes average to the wealth now."""
    now = log_betting(w_b, w_a, fund)
    up, down = log_betting(w_b + 1, w_a, fund) - now, log_betting(w_b, w_a + 1, fund) - now
    assert (math.exp(up) + math.exp(down)) / 2 == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("fund", FUNDS)
def test_stepwise_bets_reproduce_wealth_and_never_go_broke_when_random_path(fund: BettingFund) -> None:
    rng = random.Random(7)
    for p in (0.5, 0.7, 0.2):
        w_b = w_a = 0
        log_wealth = 0.0
        for _ in range(800):
            bet = betting_bet(w_b, w_a, fund)  # chosen before the vote: predictable
            assert -1.0 < bet < 1.0
            challenger = rng.random() < p
            log_wealth += math.log1p(bet if challenger else -bet)
            w_b, w_a = w_b + challenger, w_a + (not challenger)
            assert log_wealth == pytest.approx(log_betting(w_b, w_a, fund), abs=1e-9)


@pytest.mark.parametrize("fund", FUNDS)
def test_wealth_ignores_vote_order_when_batch_reordered(fund: BettingFund) -> None:
    """A recounted window whose internal order is unknown gives the same e-value in any order."""
    votes = [True] * 30 + [False] * 12
    orders = [votes, list(reversed(votes)), random.Random(3).sample(votes, len(votes))]
    finals = []
    for order in orders:
        w_b = w_a = 0
        log_wealth = 0.0
        for challenger in order:
            bet = betting_bet(w_b, w_a, fund)
            log_wealth += math.log1p(bet if challenger else -bet)
            w_b, w_a = w_b + challenger, w_a + (not challenger)
        finals.append(log_wealth)
    assert finals == pytest.approx([log_betting(30, 12, fund)] * 3, abs=1e-9)


@pytest.mark.parametrize(
    ("settings", "row"), [(BETTING, row) for row in GOLDEN] + [(BETTING_V1, row) for row in GOLDEN_V1]
)
def test_golden_row_matches_decision_rule_when_betting(
    settings: TestSettings, row: tuple[int, int, str, str, str, str]
) -> None:
    w_b, w_a, decision, e_value, lower, upper = row
    a = assess(settings, w_b, w_a)
    assert (a.decision, _as_given(a.e_value, e_value)) == (decision, e_value)
    assert (_as_given(a.cs_lower, lower), _as_given(a.cs_upper, upper)) == (lower, upper)


@pytest.mark.parametrize(
    ("settings", "n", "needed"),
    [(BETTING, n, k) for n, k in sorted(NEEDED.items())] + [(BETTING_V1, n, k) for n, k in sorted(NEEDED_V1.items())],
)
def test_challenger_wins_needed_match_decision_rule_when_betting(settings: TestSettings, n: int, needed: int) -> None:
    assert assess(settings, needed, n - needed).decision == "challenger"
    assert assess(settings, needed - 1, n - needed + 1).decision != "challenger"


@pytest.mark.parametrize(("n", "needed"), sorted(NEEDED_CHAMPION.items()))
def test_champion_wins_needed_match_decision_rule_when_betting(n: int, needed: int) -> None:
    assert assess(BETTING, n - needed, needed).decision == "champion"
    assert assess(BETTING, n - needed + 1, needed - 1).decision != "champion"


def test_betting_promotes_a_few_wins_earlier_than_msprt_when_typical_golden_rows() -> None:
    for w_b, w_a in [(65, 35), (121, 79), (120, 80)]:
        assert (assess(BETTING, w_b, w_a).decision, assess(MSPRT, w_b, w_a).decision) == ("challenger", "continue")


@pytest.mark.parametrize("fund", FUNDS)
def test_interval_excludes_half_exactly_when_wealth_reaches_threshold(fund: BettingFund) -> None:
    for n in range(1, 200):
        for w_b in range(n + 1):
            lower, upper = betting_confidence_sequence(0.05, w_b, n - w_b, fund)
            decided = log_betting(w_b, n - w_b, fund) >= math.log(20)
            assert decided == (not lower < 0.5 < upper), (w_b, n)


@pytest.mark.parametrize("fund", FUNDS)
def test_interval_is_whole_at_start_and_shrinks_when_votes_accumulate(fund: BettingFund) -> None:
    assert betting_confidence_sequence(0.05, 0, 0, fund) == (0.0, 1.0)
    widths = []
    for k in (1, 3, 10, 30, 100, 1000, 10_000):
        lower, upper = betting_confidence_sequence(0.05, 6 * k, 4 * k, fund)
        assert lower < 0.6 < upper
        widths.append(upper - lower)
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < 0.02


@pytest.mark.parametrize("fund", FUNDS)
def test_interval_holds_half_until_enough_votes_when_even(fund: BettingFund) -> None:
    for n in (0, 2, 10, 100, 10_000):
        lower, upper = betting_confidence_sequence(0.05, n // 2, n // 2, fund)
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


def test_ties_never_reach_the_fund_and_version_1_mirrors_when_swapped() -> None:
    a, b = assess(BETTING_V1, 66, 34), assess(BETTING_V1, 34, 66)
    assert (a.decision, b.decision) == ("challenger", "champion")
    assert a.e_value == pytest.approx(b.e_value, rel=1e-12)
    assert a.cs_lower == pytest.approx(1 - b.cs_upper, abs=1e-12)


def test_version_2_leans_to_the_challenger_when_sides_swapped() -> None:
    """65-35 promotes the challenger; 35-65 does not yet keep the champion (the champion's side holds 41.5 %)."""
    assert (assess(BETTING, 65, 35).decision, assess(BETTING, 35, 65).decision) == ("challenger", "continue")
    assert assess(BETTING, 65, 35).e_value > assess(BETTING, 35, 65).e_value


@pytest.mark.parametrize("version", [1, 2])
def test_million_votes_stay_finite_when_betting(version: int) -> None:
    for w_b, w_a in [(1_000_000, 0), (0, 1_000_000), (500_000, 500_000), (600_000, 400_000)]:
        a = assess(TestSettings("betting", 0.05, 0.1, 30, 2_000_000, None, method_version=version), w_b, w_a)
        assert math.isfinite(a.e_value)
        assert 0.0 <= a.cs_lower <= w_b / (w_b + w_a) <= a.cs_upper <= 1.0


def _test(**fields: object) -> api_status.TestIdentity:
    base: dict[str, object] = {
        "id": "t",
        "started_at": datetime(2026, 11, 29, tzinfo=UTC),
        "champion_hash": "a",
        "challenger_hash": "b",
        "champion_prompt": "p",
        "method": "betting",
        "alpha": 0.05,
        "tau": 0.1,
        "min_votes": 30,
        "max_votes": 5000,
    }
    return api_status.TestIdentity.model_validate(base | fields)


def test_a_test_started_with_betting_keeps_betting_and_its_fund() -> None:
    """The method and the fund pinned in status are the ones the pass assesses with: a test started before
    versions were recorded (no methodVersion) keeps version 1, whose shares differ from today's."""
    old = settings_of(_test())
    assert (old.method, old.method_version, old.fund) == ("betting", 1, BETTING_FUNDS[1])
    assert assess(old, 24, 6).decision == "challenger"  # version 1 promotes at 24-6; version 2 needs 25-5
    new = settings_of(_test(method_version=2))
    assert (new.fund, assess(new, 24, 6).decision) == (BETTING_FUNDS[2], "continue")
    assert settings_of(_test(method="t-test", method_version=2)).method == "msprt"
    assert settings_of(_test(method="msprt")).method_version == 1


def test_a_new_test_records_the_version_of_its_method() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    for method, version in (("betting", BETTING_VERSION), ("msprt", 1)):
        spec = PromptExperimentSpec.model_validate(
            {"challenger": {"prompt": "shorter"}, "analysis": AnalysisSpec(method=method).model_dump(by_alias=True)}
        )
        test = start_test(spec, api_status.PromptExperimentStatus(), "champion text", now).test
        assert test is not None
        assert (test.method, test.method_version) == (method, version)
        assert settings_of(test).method_version == version


def test_the_default_method_is_betting() -> None:
    assert AnalysisSpec().method == "betting"
