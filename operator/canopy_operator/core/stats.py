"""The always-valid sequential test that decides an A/B prompt test (see decision-rule.md).

Only decisive votes count: ``w_B`` challenger wins, ``w_A`` champion wins, ``n = w_B + w_A``,
``D = w_B - w_A``. Ties are counted elsewhere and never reach this module.

Methods (all computed in log space, so ``n = 1e6`` neither overflows nor underflows):

* ``msprt``: ``Lambda_n = sqrt(c/(n+c)) * exp(D^2 / (2(n+c)))`` with ``c = 1/(4 tau^2)``; the
  leader (sign of ``D``) wins once ``Lambda_n >= 1/alpha``.
* ``bayes-factor``: ``BF_n = B(a + w_B, a + w_A) / B(a, a) * 2^n`` with ``a = 10``; same rule.
* ``one-sided``: only the challenger can win, when ``w_B - n/2 >= u(n)`` with
  ``u(n) = sqrt(2(n/4+rho) ln(1 + sqrt((n/4+rho)/rho) / (2 alpha)))`` and ``rho = 6.25`` (Howard et al.'s
  one-sided normal-mixture boundary). Its statistic is that boundary solved for ``1/alpha``:
  ``E_n = 2 sqrt(rho/(n/4+rho)) * (exp(s^2/(2(n/4+rho))) - 1)`` for ``s = w_B - n/2 > 0``, else 0. Since the
  boundary holds at every level at once, ``P(max_n E_n >= 1/alpha) <= alpha`` and ``1/max E`` is an
  always-valid p-value; a promotion happens exactly when ``E_n >= 1/alpha``. The test stops early keeping
  the champion when the confidence sequence's upper end falls below 1/2.
* ``betting`` (default): testing by betting. A fund (``BettingFund``) starts with one unit of wealth shared
  among bettors. Constant bettor ``k`` of edge ``delta_k`` backs one side and stakes the fixed fraction
  ``lambda_k = 2 delta_k`` of its own wealth on it at every decisive vote: ``c_k`` of the fund backs the
  challenger, ``h_k`` the champion (version 2 gives the challenger's side 56 %, version 1 split them
  evenly); the plug-in bettor holds ``pi_0`` and stakes ``(w_B - w_A)/(n + 2a)`` on the challenger, its
  running estimate of the lead. So ``W_n = sum_k (c_k (1+lambda_k)^w_B (1-lambda_k)^w_A + h_k (1-lambda_k)^w_B
  (1+lambda_k)^w_A) + pi_0 B(a + w_B, a + w_A) / B(a, a) 2^n``. The fund's stake on a vote is the
  wealth-weighted average of its bettors' (``betting_bet``): chosen from the votes before it only
  (predictable) and adapting to the lead. Under "no difference" every vote is a fair coin given the past, so
  ``W_n`` is a non-negative martingale and Ville's inequality gives ``P(ever W_n >= 1/alpha) <= alpha``,
  whichever side wins. ``W_n`` depends on the counts, not on the order of the votes, so a batch whose
  internal order is unknown (a recounted MLflow window) gives the same e-value, and looking only at poll
  times looks at some of the times Ville's inequality covers. The same fund betting against any ``p0`` gives
  the confidence sequence (``betting_confidence_sequence``), which excludes 1/2 exactly when
  ``W_n >= 1/alpha``. A test keeps the fund version it started with (``TestSettings.method_version``).

For ``msprt``, ``bayes-factor`` and ``one-sided`` the confidence sequence for ``P(challenger preferred)`` is
``w_B/n +/- sqrt((n+c) ln((n+c)/(c alpha^2))) / (2n)``, clipped to [0, 1] ([0, 1] at ``n = 0``). For every
method the always-valid p-value is ``min(1, 1/max_k E_k)``; the running maximum is carried in by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from canopy_operator.api.status import Decision

Method = Literal["msprt", "bayes-factor", "one-sided", "betting"]

BAYES_PRIOR_A = 10.0
"""Beta(a, a) mixture of the Bayes-factor method."""
ONE_SIDED_RHO = 6.25
"""Mixture scale of the one-sided boundary."""


@dataclass(frozen=True)
class BettingFund:
    """How a betting fund shares its starting wealth among its bettors (the shares add up to 1)."""

    edges: tuple[float, ...]
    """``delta_k``: constant bettor ``k`` backs a preference ``1/2 + delta_k`` for one side, staking ``2 delta_k``."""
    challenger_shares: tuple[float, ...]
    """The share the constant bettor of each edge that backs the challenger starts with."""
    champion_shares: tuple[float, ...]
    """The share the constant bettor of each edge that backs the champion starts with."""
    plug_in_share: float
    """``pi_0``: the plug-in bettor's share."""
    plug_in_a: float
    """``a``: the plug-in bettor's estimate ``(w_B + a)/(n + 2a)`` starts from ``a`` pseudo-votes per side."""

    def __post_init__(self) -> None:
        shares = (*self.challenger_shares, *self.champion_shares, self.plug_in_share)
        if not len(self.edges) == len(self.challenger_shares) == len(self.champion_shares):
            raise ValueError("a fund needs one challenger and one champion share per edge")
        if not all(0 < delta < 0.5 for delta in self.edges) or not all(share >= 0 for share in shares):
            raise ValueError("edges must be in (0, 1/2) and shares >= 0")
        if not math.isclose(math.fsum(shares), 1.0, abs_tol=1e-12) or not self.plug_in_share > 0:
            raise ValueError("a fund's shares must add up to 1, with some for the plug-in bettor")

    @cached_property
    def constant_bettors(self) -> tuple[tuple[float, float], ...]:
        """``(ln share, q)`` of every constant bettor holding wealth, ``q`` the challenger's probability it
        backs (``1/2 + delta`` on the challenger's side, ``1/2 - delta`` on the champion's): its stake on the
        challenger is ``2q - 1``."""
        bettors = []
        for delta, on_challenger, on_champion in zip(
            self.edges, self.challenger_shares, self.champion_shares, strict=True
        ):
            bettors += [
                (math.log(share), 0.5 + side * delta)
                for share, side in ((on_challenger, 1), (on_champion, -1))
                if share > 0
            ]
        return tuple(bettors)


_EDGES = (0.04, 0.06, 0.1, 0.15, 0.2)
BETTING_FUNDS: dict[int, BettingFund] = {
    1: BettingFund(
        edges=_EDGES,
        challenger_shares=(0.075, 0.075, 0.2, 0.05, 0.075),
        champion_shares=(0.075, 0.075, 0.2, 0.05, 0.075),
        plug_in_share=0.05,
        plug_in_a=12.0,
    ),
    2: BettingFund(
        edges=_EDGES,
        challenger_shares=(0.105, 0.05, 0.29, 0.08, 0.035),
        champion_shares=(0.08, 0.07, 0.195, 0.04, 0.03),
        plug_in_share=0.025,
        plug_in_a=12.0,
    ),
}
"""The betting funds by version. A test keeps the version it started with (``status.test.methodVersion``).
Version 1 (the first release of ``betting``) split every edge's share evenly between the sides; version 2 gives
the challenger's side more, so that a better challenger is promoted sooner (docs/decision-rule.md)."""
BETTING_VERSION = 2
"""The version a new ``betting`` test starts with."""
METHOD_VERSIONS: dict[str, int] = {"msprt": 1, "bayes-factor": 1, "one-sided": 1, "betting": BETTING_VERSION}
"""The version of each method's constants a new test records; only ``betting`` has had more than one."""
E_VALUE_CAP = 1e300
"""E-values are capped here so they stay finite (status is JSON, which has no infinity)."""
_LOG_E_CAP = math.log(E_VALUE_CAP)


@dataclass(frozen=True)
class TestSettings:
    """The analysis settings fixed when a test starts."""

    __test__ = False  # not a pytest test class, despite the name

    method: Method
    alpha: float
    tau: float
    min_votes: int
    max_votes: int
    equivalence_delta: float | None
    method_version: int | None = None
    """The version of the method's constants (``METHOD_VERSIONS``); None: the one a new test starts with."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if not 0 <= self.min_votes <= self.max_votes:
            raise ValueError(f"need 0 <= min_votes <= max_votes, got {self.min_votes}, {self.max_votes}")
        if self.equivalence_delta is not None and not 0 < self.equivalence_delta < 0.5:
            raise ValueError(f"equivalence_delta must be in (0, 0.5), got {self.equivalence_delta}")
        known = BETTING_FUNDS if self.method == "betting" else {1: None}
        if self.method_version is not None and self.method_version not in known:
            raise ValueError(f"{self.method} has no version {self.method_version} (known: {sorted(known)})")

    @property
    def fund(self) -> BettingFund:
        """The betting fund of this test (``betting`` only)."""
        return BETTING_FUNDS[BETTING_VERSION if self.method_version is None else self.method_version]

    @property
    def c(self) -> float:
        """The mSPRT mixture constant ``c = 1/(4 tau^2)``."""
        return 1.0 / (4.0 * self.tau * self.tau)


@dataclass(frozen=True)
class Assessment:
    """The evidence and the decision at one count."""

    decisive_votes: int
    e_value: float
    max_e_value: float
    p_value: float
    cs_lower: float
    cs_upper: float
    decision: Decision
    reason: str


def log_msprt(n: int, d: int, c: float) -> float:
    """``ln Lambda_n`` of the two-sided normal-mixture SPRT."""
    return 0.5 * math.log(c / (n + c)) + d * d / (2.0 * (n + c))


def log_bayes_factor(challenger_wins: int, champion_wins: int, a: float = BAYES_PRIOR_A) -> float:
    """``ln BF_n`` of the Beta(a, a) mixture against the fair coin."""
    n = challenger_wins + champion_wins
    log_beta_post = math.lgamma(a + challenger_wins) + math.lgamma(a + champion_wins) - math.lgamma(2 * a + n)
    log_beta_prior = 2 * math.lgamma(a) - math.lgamma(2 * a)
    return log_beta_post - log_beta_prior + n * math.log(2.0)


def log_one_sided(n: int, challenger_wins: int, rho: float = ONE_SIDED_RHO) -> float:
    """``ln E_n`` of the one-sided boundary (``-inf`` when the challenger is not ahead)."""
    s = challenger_wins - n / 2.0
    if s <= 0:
        return -math.inf
    v = n / 4.0 + rho
    x = s * s / (2.0 * v)
    log_expm1 = x + math.log1p(-math.exp(-x)) if x > 1.0 else math.log(math.expm1(x))
    return math.log(2.0) + 0.5 * math.log(rho / v) + log_expm1


def _log_sum_exp(terms: list[float]) -> float:
    top = max(terms)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(t - top) for t in terms))


def _xlogy(x: int, y: float) -> float:
    """``x ln y`` with ``0 ln 0 = 0`` and ``x ln 0 = -inf``."""
    if x == 0:
        return 0.0
    return -math.inf if y <= 0.0 else x * math.log(y)


def _log_beta(x: float, y: float) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)


def _betting_log_predictions(challenger_wins: int, champion_wins: int, fund: BettingFund) -> list[float]:
    """Each bettor's share times the probability it gave the votes, ``ln(pi_k q_k^w_B (1-q_k)^w_A)``, the
    constant bettors in the order of ``BettingFund.constant_bettors``, then the plug-in bettor."""
    terms = [
        log_share + _xlogy(challenger_wins, q) + _xlogy(champion_wins, 1.0 - q)
        for log_share, q in fund.constant_bettors
    ]
    a = fund.plug_in_a
    terms.append(math.log(fund.plug_in_share) + _log_beta(a + challenger_wins, a + champion_wins) - _log_beta(a, a))
    return terms


def _stakes(challenger_wins: int, champion_wins: int, fund: BettingFund) -> list[float]:
    """Each bettor's stake on the challenger, in the order of ``_betting_log_predictions``."""
    n = challenger_wins + champion_wins
    plug_in = (challenger_wins - champion_wins) / (n + 2.0 * fund.plug_in_a)
    return [2.0 * q - 1.0 for _, q in fund.constant_bettors] + [plug_in]


def _fund(fund: BettingFund | None) -> BettingFund:
    return BETTING_FUNDS[BETTING_VERSION] if fund is None else fund


def _log_betting_fund(challenger_wins: int, champion_wins: int, fund: BettingFund) -> float:
    """``ln F_n``: the fund's probability of the votes seen (its wealth against ``p0`` is ``F_n / L_n(p0)``)."""
    return _log_sum_exp(_betting_log_predictions(challenger_wins, champion_wins, fund))


def log_betting(challenger_wins: int, champion_wins: int, fund: BettingFund | None = None) -> float:
    """``ln W_n``: the betting fund's log-wealth against "no difference" (starting wealth 1); the current fund
    unless given."""
    fund = _fund(fund)
    return _log_betting_fund(challenger_wins, champion_wins, fund) + (challenger_wins + champion_wins) * math.log(2.0)


def betting_bet(challenger_wins: int, champion_wins: int, fund: BettingFund | None = None) -> float:
    """The fund's stake on the challenger for the next vote (negative: on the champion), as a fraction of its
    wealth: ``W_{n+1} = W_n (1 + bet)`` if the challenger wins it, ``W_n (1 - bet)`` if the champion does.

    The wealth-weighted average of its bettors' stakes, from the counts so far only; ``|bet| < 1``, so the
    wealth never reaches 0."""
    fund = _fund(fund)
    stakes = _stakes(challenger_wins, champion_wins, fund)
    log_wealth = _betting_log_predictions(challenger_wins, champion_wins, fund)
    top = max(log_wealth)
    shares = [math.exp(w - top) for w in log_wealth]
    return math.fsum(s * x for s, x in zip(shares, stakes, strict=True)) / math.fsum(shares)


def betting_confidence_sequence(
    alpha: float, challenger_wins: int, champion_wins: int, fund: BettingFund | None = None
) -> tuple[float, float]:
    """The ``p0`` the betting fund does not reject at level ``alpha``: ``{p0 : W_n(p0) < 1/alpha}``.

    Against ``p0`` every bettor keeps the probabilities it gives each vote (a constant bettor ``q_k``, the
    plug-in bettor its running estimate) and is paid fair odds for ``p0``: its wealth is the probability it
    gave the votes divided by ``L_n(p0) = p0^w_B (1-p0)^w_A``, a martingale when P(challenger preferred) = p0.
    So ``ln W_n(p0) = ln F_n - ln L_n(p0)`` (``F_n``: ``_log_betting_fund``). ``ln L_n`` is concave with its
    maximum at ``w_B/n``, where it is at least ``ln F_n``, so the set is an interval around ``w_B/n``; its ends
    are found by bisection (60 halvings, in constant time whatever ``n``). At ``p0 = 1/2`` this is the test:
    1/2 is outside exactly when ``W_n >= 1/alpha``."""
    fund = _fund(fund)
    n = challenger_wins + champion_wins
    if n <= 0:
        return 0.0, 1.0
    floor = _log_betting_fund(challenger_wins, champion_wins, fund) + math.log(alpha)

    def kept(p0: float) -> bool:
        return _xlogy(challenger_wins, p0) + _xlogy(champion_wins, 1.0 - p0) > floor

    centre = challenger_wins / n

    def edge(inside: float, outside: float) -> float:
        if kept(outside):
            return outside
        for _ in range(60):
            mid = (inside + outside) / 2.0
            if kept(mid):
                inside = mid
            else:
                outside = mid
        return inside

    return edge(centre, 0.0), edge(centre, 1.0)


def msprt_boundary(n: int, c: float, alpha: float) -> float:
    """The |D| at which ``Lambda_n`` reaches ``1/alpha``: ``sqrt((n+c) ln((n+c)/(c alpha^2)))``."""
    return math.sqrt((n + c) * math.log((n + c) / (c * alpha * alpha)))


def one_sided_boundary(n: int, alpha: float, rho: float = ONE_SIDED_RHO) -> float:
    """The ``w_B - n/2`` at which the one-sided method promotes the challenger."""
    v = n / 4.0 + rho
    return math.sqrt(2.0 * v * math.log(1.0 + math.sqrt(v / rho) / (2.0 * alpha)))


def confidence_sequence(settings: TestSettings, challenger_wins: int, n: int) -> tuple[float, float]:
    """Always-valid confidence interval for P(challenger preferred), clipped to [0, 1]."""
    if settings.method == "betting":
        return betting_confidence_sequence(settings.alpha, challenger_wins, n - challenger_wins, settings.fund)
    if n <= 0:
        return 0.0, 1.0
    centre = challenger_wins / n
    half = msprt_boundary(n, settings.c, settings.alpha) / (2.0 * n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_e_value(settings: TestSettings, challenger_wins: int, champion_wins: int) -> float:
    n = challenger_wins + champion_wins
    if settings.method == "msprt":
        return log_msprt(n, challenger_wins - champion_wins, settings.c)
    if settings.method == "bayes-factor":
        return log_bayes_factor(challenger_wins, champion_wins)
    if settings.method == "betting":
        return log_betting(challenger_wins, champion_wins, settings.fund)
    return log_one_sided(n, challenger_wins)


def _decide(
    settings: TestSettings, challenger_wins: int, champion_wins: int, log_e: float, cs: tuple[float, float]
) -> tuple[Decision, str]:
    n = challenger_wins + champion_wins
    threshold = 1.0 / settings.alpha
    e_text = f"e-value {_fmt(math.exp(min(log_e, _LOG_E_CAP)))}"
    if n < settings.min_votes:
        return "continue", f"{n} decisive votes, a decision needs at least {settings.min_votes}"
    if log_e >= -math.log(settings.alpha) and challenger_wins != champion_wins:
        leader: Decision = "challenger" if challenger_wins > champion_wins else "champion"
        return leader, f"{leader} preferred: {e_text} >= 1/alpha = {_fmt(threshold)} after {n} decisive votes"
    if settings.method == "one-sided" and cs[1] < 0.5:
        return "champion", (
            f"challenger cannot be shown better: CS upper end {cs[1]:.4f} < 1/2 after {n} decisive votes"
        )
    delta = settings.equivalence_delta
    if delta is not None and 0.5 - delta < cs[0] and cs[1] < 0.5 + delta:
        interval = f"CS [{cs[0]:.4f}, {cs[1]:.4f}]"
        return (
            "equivalent",
            f"no meaningful difference: {interval} inside 1/2 +/- {delta:g} after {n} decisive votes",
        )
    if n >= settings.max_votes:
        return "no_winner", (
            f"no winner after {n} decisive votes (max {settings.max_votes}): {e_text} < {_fmt(threshold)}"
        )
    return "continue", f"{e_text} < 1/alpha = {_fmt(threshold)} after {n} decisive votes"


def assess(
    settings: TestSettings, challenger_wins: int, champion_wins: int, prev_max_e_value: float = 1.0
) -> Assessment:
    """Evidence and decision for the counts; ``prev_max_e_value`` is the running maximum kept in status."""
    if challenger_wins < 0 or champion_wins < 0:
        raise ValueError("vote counts must be >= 0")
    n = challenger_wins + champion_wins
    log_e = _log_e_value(settings, challenger_wins, champion_wins)
    e_value = E_VALUE_CAP if log_e >= _LOG_E_CAP else math.exp(log_e)
    max_e = min(max(prev_max_e_value, e_value), E_VALUE_CAP)
    cs = confidence_sequence(settings, challenger_wins, n)
    decision, reason = _decide(settings, challenger_wins, champion_wins, log_e, cs)
    return Assessment(
        decisive_votes=n,
        e_value=e_value,
        max_e_value=max_e,
        p_value=min(1.0, 1.0 / max_e) if max_e > 0 else 1.0,
        cs_lower=cs[0],
        cs_upper=cs[1],
        decision=decision,
        reason=reason,
    )


def decision_summary(challenger_wins: int, champion_wins: int, ties: int, a: Assessment, action: str) -> str:
    """One line for events and history.

    For example ``challenger preferred 66\u201334 (ties 5), p=0.037, CS [0.51, 0.81]: promoted`` (en dash;
    the leader's count first).
    """
    if challenger_wins > champion_wins:
        score = f"challenger preferred {challenger_wins}\u2013{champion_wins}"
    elif champion_wins > challenger_wins:
        score = f"champion preferred {champion_wins}\u2013{challenger_wins}"
    else:
        score = f"even {challenger_wins}\u2013{champion_wins}"
    interval = f"CS [{a.cs_lower:.2f}, {a.cs_upper:.2f}]"
    return f"{score} (ties {ties}), {format_p_value(a.p_value)}, {interval}: {action}"


def format_p_value(p: float) -> str:
    """``p=0.037`` (two significant digits), ``p<0.001`` below one in a thousand."""
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _fmt(x: float) -> str:
    return f"{x:.3g}"
