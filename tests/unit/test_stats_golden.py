"""The default rule reproduces decision-rule.md's golden table and thresholds to the digits given there."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from canopy_operator.core.stats import (
    Assessment,
    TestSettings,
    assess,
    decision_summary,
    log_bayes_factor,
    one_sided_boundary,
)

DEFAULT = TestSettings(method="msprt", alpha=0.05, tau=0.1, min_votes=30, max_votes=5000, equivalence_delta=None)

# w_B, w_A, decision, Lambda_n, CS lower, CS upper: copied verbatim from decision-rule.md.
GOLDEN = [
    (25, 5, "challenger", "25.588", "0.5115", "1.0"),
    (24, 6, "continue", "12.823", "0.4782", "1.0"),
    (66, 34, "challenger", "26.877", "0.5059", "0.8141"),
    (65, 35, "continue", "16.367", "0.4959", "0.8041"),
    (60, 40, "continue", "2.2151", "0.4459", "0.7541"),
    (122, 78, "challenger", "24.621", "0.5027", "0.7173"),
    (121, 79, "continue", "16.800", "0.4977", "0.7123"),
    (34, 66, "champion", "26.877", "0.1859", "0.4941"),
    (510, 490, "continue", "0.1898", "0.4601", "0.5599"),
    (2620, 2380, "challenger", "21.752", "0.5002", "0.5478"),
    (2500, 2500, "no_winner", "0.0705", "0.4762", "0.5238"),
]

# Challenger wins needed to promote at n decisive votes.
NEEDED = {30: 25, 50: 37, 100: 66, 150: 94, 200: 122, 300: 177, 500: 285, 1000: 550, 2000: 1073, 5000: 2620}


def _as_given(value: float, given: str) -> str:
    decimals = len(given.split(".")[1]) if "." in given else 0
    return f"{value:.{decimals}f}"


@pytest.mark.parametrize(("w_b", "w_a", "decision", "e_value", "lower", "upper"), GOLDEN)
def test_golden_row_matches_decision_rule_when_default_settings(
    w_b: int, w_a: int, decision: str, e_value: str, lower: str, upper: str
) -> None:
    a = assess(DEFAULT, w_b, w_a)
    assert (a.decision, _as_given(a.e_value, e_value)) == (decision, e_value)
    assert (_as_given(a.cs_lower, lower), _as_given(a.cs_upper, upper)) == (lower, upper)
    assert a.decisive_votes == w_b + w_a


def test_golden_row_stops_equivalent_when_equivalence_delta_is_tenth() -> None:
    settings = TestSettings("msprt", 0.05, 0.1, 30, 5000, equivalence_delta=0.1)
    assert assess(settings, 510, 490).decision == "equivalent"
    assert assess(settings, 60, 40).decision == "continue"


@pytest.mark.parametrize(("n", "needed"), sorted(NEEDED.items()))
def test_challenger_wins_needed_match_decision_rule_when_default_settings(n: int, needed: int) -> None:
    assert assess(DEFAULT, needed, n - needed).decision == "challenger"
    assert assess(DEFAULT, needed - 1, n - needed + 1).decision != "challenger"


def test_p_value_is_inverse_running_max_when_evidence_falls_back() -> None:
    peak = assess(DEFAULT, 25, 5)
    later = assess(DEFAULT, 26, 14, prev_max_e_value=peak.max_e_value)
    assert later.e_value < peak.e_value
    assert later.max_e_value == peak.max_e_value
    assert later.p_value == pytest.approx(1 / 25.588, rel=1e-4)


def test_decision_summary_reads_like_issue_example_when_challenger_promoted() -> None:
    a = assess(DEFAULT, 66, 34)
    assert decision_summary(66, 34, 5, a, "promoted") == (
        "challenger preferred 66\u201334 (ties 5), p=0.037, CS [0.51, 0.81]: promoted"
    )


def test_decision_summary_puts_leader_first_when_champion_ahead() -> None:
    a = assess(DEFAULT, 34, 66)
    assert decision_summary(34, 66, 0, a, "champion kept") == (
        "champion preferred 66\u201334 (ties 0), p=0.037, CS [0.19, 0.49]: champion kept"
    )


def test_decision_summary_shows_tiny_p_value_as_bound_when_overwhelming() -> None:
    a = Assessment(900, 1e40, 1e40, 1e-40, 0.9, 1.0, "challenger", "")
    assert "p<0.001" in decision_summary(900, 0, 0, a, "promoted")


def test_no_decision_when_below_min_votes_even_if_unanimous() -> None:
    a = assess(DEFAULT, 29, 0)
    assert a.decision == "continue"
    assert "29 decisive votes" in a.reason
    assert a.e_value > 20


def test_no_votes_gives_whole_interval_and_p_one() -> None:
    a = assess(DEFAULT, 0, 0)
    assert (a.cs_lower, a.cs_upper, a.p_value, a.decision) == (0.0, 1.0, 1.0, "continue")


def test_huge_counts_stay_finite_when_million_votes() -> None:
    for method in ("msprt", "bayes-factor", "one-sided"):
        settings = TestSettings(method, 0.05, 0.1, 30, 2_000_000, None)
        for w_b, w_a in [(1_000_000, 0), (0, 1_000_000), (500_000, 500_000), (600_000, 400_000)]:
            a = assess(settings, w_b, w_a)
            assert math.isfinite(a.e_value)
            assert math.isfinite(a.max_e_value)
            assert 0.0 <= a.p_value <= 1.0


def test_bayes_factor_matches_exact_rational_when_small_counts() -> None:
    def beta(x: int, y: int) -> Fraction:
        return Fraction(math.factorial(x - 1) * math.factorial(y - 1), math.factorial(x + y - 1))

    for w_b, w_a in [(0, 0), (3, 1), (25, 5), (17, 23)]:
        exact = beta(10 + w_b, 10 + w_a) / beta(10, 10) * 2 ** (w_b + w_a)
        assert log_bayes_factor(w_b, w_a) == pytest.approx(math.log(exact), rel=1e-12, abs=1e-12)


def test_bayes_factor_promotes_when_golden_challenger_lead_at_hundred() -> None:
    settings = TestSettings("bayes-factor", 0.05, 0.1, 30, 5000, None)
    assert assess(settings, 66, 34).decision == "challenger"
    assert assess(settings, 34, 66).decision == "champion"
    assert assess(settings, 60, 40).decision == "continue"


def test_one_sided_promotes_exactly_at_its_boundary_when_challenger_ahead() -> None:
    settings = TestSettings("one-sided", 0.05, 0.1, 30, 5000, None)
    for n in (30, 100, 1000):
        needed = math.ceil(n / 2 + one_sided_boundary(n, 0.05))
        assert assess(settings, needed, n - needed).decision == "challenger"
        assert assess(settings, needed - 1, n - needed + 1).decision != "challenger"


def test_one_sided_keeps_champion_only_when_interval_below_half() -> None:
    settings = TestSettings("one-sided", 0.05, 0.1, 30, 5000, None)
    strong = assess(settings, 30, 70)
    assert (strong.decision, strong.cs_upper < 0.5) == ("champion", True)
    weak = assess(settings, 35, 65)
    assert (weak.decision, weak.cs_upper >= 0.5) == ("continue", True)
    assert weak.e_value == 0.0


def test_one_sided_needs_fewer_wins_than_two_sided_when_challenger_ahead() -> None:
    settings = TestSettings("one-sided", 0.05, 0.1, 30, 5000, None)
    assert assess(settings, 65, 35).decision == "challenger"
    assert assess(DEFAULT, 65, 35).decision == "continue"
    assert assess(settings, 2612, 2388).decision == "challenger"
    assert assess(DEFAULT, 2612, 2388).decision == "no_winner"


def test_invalid_settings_are_rejected_with_field_named() -> None:
    with pytest.raises(ValueError, match="alpha"):
        TestSettings("msprt", 0.0, 0.1, 30, 5000, None)
    with pytest.raises(ValueError, match="min_votes"):
        TestSettings("msprt", 0.05, 0.1, 50, 40, None)
