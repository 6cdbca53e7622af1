"""Monte Carlo check of the A/B decision rule, looking after every decisive vote (not a test; not run in CI).

Run: ``.venv/bin/python bench/decision_sim.py [--reps N] [--seed S] [--check-paths M]``.

Compared: the operator's four methods (``msprt``, ``bayes-factor``, ``one-sided``, ``betting``), an oracle SPRT
that knows ``p = 0.65`` (two-sided: ``(LR_0.65 + LR_0.35)/2 >= 1/alpha``; and one-sided) with the same minimum
and maximum votes, the course UI's rule and a naive z-test. Besides the Monte Carlo figures, the exact
probabilities and mean votes of every rule are computed from its tables by dynamic programming over
``(n, D)`` (no sampling error), so "no worse than mSPRT" can be read without Monte Carlo noise.

Every rule is reduced to two integer tables: the test stops for the challenger at the first ``n`` with
``D >= up[n]`` and for the champion with ``-D >= lo[n]`` (``D = w_B - w_A``). For the operator's methods the
tables are derived from ``canopy_operator.core.stats.assess`` itself (smallest ``w_B`` giving each decision
at every ``n``), and before simulating, ``--check-paths`` explicit vote paths are replayed twice: once
calling ``assess`` after every vote, once through the fast walker below; they must stop at the same vote
with the same decision.

The fast walker is exact, not an approximation: D moves by one per vote, so from ``(n, D)`` no stop is
possible during the next ``k`` votes while ``D + k < min(up[n+1:])`` and ``-D + k < min(lo[n+1:])``; it
draws the number of challenger wins among those ``k`` votes in one go (an exact bit-parallel Binomial) and
only checks vote by vote near the boundary.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from canopy_operator.api.status import Decision
from canopy_operator.core.stats import TestSettings, assess

MAX_VOTES = 5000
NEVER = 10**9
PROBABILITIES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.8)
CHAMPION_SIDE = (0.45, 0.4, 0.35, 0.3, 0.2)
"""Effects the other way (the challenger worse), computed exactly only: the champion's side of each test."""
REPLAY_PROBABILITIES = (0.5, 0.55, 0.6, 0.7, 0.45, 0.35)
ALPHA = 0.05
MIN_VOTES = 30
ORACLE_P = 0.65
DEFAULT = TestSettings("msprt", alpha=ALPHA, tau=0.1, min_votes=MIN_VOTES, max_votes=MAX_VOTES, equivalence_delta=None)
Z_975 = 1.959963984540054


@dataclass(frozen=True)
class Rule:
    """A stopping rule as boundary tables over n = 0..max_votes."""

    name: str
    up: list[int]
    lo: list[int]

    def suffix_min(self) -> tuple[list[int], list[int]]:
        """min(up[m:]) and min(lo[m:]) for every m (NEVER past the end)."""
        return _suffix_min(self.up), _suffix_min(self.lo)


def _suffix_min(table: Sequence[int]) -> list[int]:
    out = [NEVER] * (len(table) + 1)
    for m in range(len(table) - 1, -1, -1):
        out[m] = min(table[m], out[m + 1])
    return out


def _smallest_w_b(n: int, decides: Callable[[int], bool], low: int, high: int) -> int | None:
    """Smallest w_B in [low, high] for which ``decides`` holds (it is monotone in w_B)."""
    if low > high or not decides(high):
        return None
    while low < high:
        mid = (low + high) // 2
        if decides(mid):
            high = mid
        else:
            low = mid + 1
    return low


def rule_from_assess(name: str, settings: TestSettings) -> Rule:
    """Boundary tables of ``assess`` itself, checked at both sides of each boundary."""
    up, lo = [NEVER] * (settings.max_votes + 1), [NEVER] * (settings.max_votes + 1)
    for n in range(settings.max_votes + 1):

        def challenger(w_b: int, n: int = n) -> bool:
            return assess(settings, w_b, n - w_b).decision == "challenger"

        def champion(w_a: int, n: int = n) -> bool:
            return assess(settings, n - w_a, w_a).decision == "champion"

        w_b = _smallest_w_b(n, challenger, 0, n)
        if w_b is not None:
            assert w_b == 0 or not challenger(w_b - 1), (name, n)
            up[n] = 2 * w_b - n
        w_a = _smallest_w_b(n, champion, 0, n)
        if w_a is not None:
            assert w_a == 0 or not champion(w_a - 1), (name, n)
            lo[n] = 2 * w_a - n
    return Rule(name, up, lo)


def oracle_rule(q: float = ORACLE_P, *, two_sided: bool = True) -> Rule:
    """The SPRT that knows the effect: ``LR_n(q) = (2q)^w_B (2(1-q))^w_A``; two-sided, the e-process
    ``(LR_n(q) + LR_n(1-q))/2 >= 1/alpha`` promotes the leader, one-sided ``LR_n(q) >= 1/alpha`` the challenger.
    Same minimum and maximum votes as the operator. Not usable in practice: nobody knows p."""
    threshold = -math.log(ALPHA)
    up_step, down_step = math.log(2 * q), math.log(2 * (1 - q))

    def log_e(w_b: int, w_a: int) -> float:
        lead = w_b * up_step + w_a * down_step
        if not two_sided:
            return lead
        trail = w_b * down_step + w_a * up_step
        top = max(lead, trail)
        return top + math.log((math.exp(lead - top) + math.exp(trail - top)) / 2)

    up, lo = [NEVER] * (MAX_VOTES + 1), [NEVER] * (MAX_VOTES + 1)
    for n in range(MIN_VOTES, MAX_VOTES + 1):
        w_b = next((w for w in range(n // 2 + 1, n + 1) if log_e(w, n - w) >= threshold), None)
        if w_b is not None:
            up[n] = 2 * w_b - n
            if two_sided:
                lo[n] = up[n]
    name = f"oracle SPRT knowing p = {q}, {'two-sided' if two_sided else 'one-sided'}"
    return Rule(name, up, lo)


def course_ui_rule() -> Rule:
    """The course UI: a side wins at a win rate >= 70 % after >= 3 comparisons (|D| >= 0.4 n)."""
    table = [NEVER if n < 3 else -(-2 * n // 5) for n in range(MAX_VOTES + 1)]
    return Rule("course UI (>= 70 % after >= 3)", table, table)


def naive_z_rule() -> Rule:
    """A two-sided z-test at 0.05 repeated after every vote from n >= 30: |D| >= 1.96 sqrt(n)."""
    table = [NEVER if n < 30 else math.ceil(Z_975 * math.sqrt(n)) for n in range(MAX_VOTES + 1)]
    return Rule("naive z-test, every vote from 30", table, table)


def binary_expansion(p: float) -> list[int]:
    """The bits of p in [0, 1) (exact for a float: 60 bits is more than its 53)."""
    bits = []
    for _ in range(60):
        p *= 2
        bit = int(p >= 1)
        bits.append(bit)
        p -= bit
    return bits


def binomial(k: int, p_bits: Sequence[int], rng: random.Random) -> int:
    """Exact Binomial(k, p): k uniform reals compared with p bit by bit, all k lanes at once."""
    undecided, success = (1 << k) - 1, 0
    for bit in p_bits:
        r = rng.getrandbits(k)
        if bit:
            success |= undecided & ~r
            undecided &= r
        else:
            undecided &= ~r
        if not undecided:
            break
    return success.bit_count()


def check_binomial(rng: random.Random, draws: int = 20_000) -> None:
    """The sampler's mean and variance match Binomial(k, p) within 5 standard errors."""
    for p, k in itertools.product((0.5, 0.55, 0.8), (1, 7, 300)):
        bits = binary_expansion(p)
        xs = [binomial(k, bits, rng) for _ in range(draws)]
        mean, var = statistics.fmean(xs), statistics.pvariance(xs)
        assert abs(mean - k * p) < 5 * math.sqrt(k * p * (1 - p) / draws), (p, k, mean)
        assert abs(var / (k * p * (1 - p)) - 1) < 5 * math.sqrt(2 / draws), (p, k, var)


Advance = Callable[[int], int]
"""advance(k): challenger wins among the next k decisive votes."""


def walk(rule: Rule, mins: tuple[list[int], list[int]], advance: Advance, max_votes: int) -> tuple[str, int]:
    """Run one test to its stop: (decision, decisive votes at the stop)."""
    up, lo = rule.up, rule.lo
    up_min, lo_min = mins
    n = d = 0
    while n < max_votes:
        safe = min(up_min[n + 1] - d, lo_min[n + 1] + d) - 1
        if safe >= 1:
            k = min(safe, max_votes - n)
            d += 2 * advance(k) - k
            n += k
            continue
        d += 2 * advance(1) - 1
        n += 1
        if d >= up[n]:
            return "challenger", n
        if -d >= lo[n]:
            return "champion", n
    return "no_winner", n


def walk_with_assess(settings: TestSettings, votes: Sequence[int]) -> tuple[Decision, int]:
    """The reference: ``assess`` after every vote, carrying the running max like the operator's status."""
    w_b = w_a = 0
    running = 1.0
    for vote in votes:
        w_b, w_a = w_b + vote, w_a + 1 - vote
        a = assess(settings, w_b, w_a, prev_max_e_value=running)
        running = a.max_e_value
        if a.decision != "continue":
            return a.decision, a.decisive_votes
    return "continue", w_b + w_a


def path_advance(votes: Sequence[int]) -> Advance:
    """advance() reading an explicit vote path."""
    prefix = [0, *itertools.accumulate(votes)]
    position = 0

    def advance(k: int) -> int:
        nonlocal position
        position += k
        return prefix[position] - prefix[position - k]

    return advance


def check_against_assess(rules: dict[str, tuple[Rule, TestSettings]], paths: int, rng: random.Random) -> int:
    """Replay explicit paths through assess and through the walker; return how many were compared."""
    compared = 0
    for rule, settings in rules.values():
        mins = rule.suffix_min()
        for i in range(paths):
            p = REPLAY_PROBABILITIES[i % len(REPLAY_PROBABILITIES)]
            votes = [int(rng.random() < p) for _ in range(settings.max_votes)]
            expected = walk_with_assess(settings, votes)
            got = walk(rule, mins, path_advance(votes), settings.max_votes)
            assert got == expected, (rule.name, p, i, got, expected)
            compared += 1
    return compared


@dataclass(frozen=True)
class Exact:
    """Exact outcome probabilities and mean decisive votes of a rule at one p (no sampling error)."""

    p: float
    challenger: float
    champion: float
    mean_votes: float


def exact(rule: Rule, p: float, max_votes: int = MAX_VOTES) -> Exact:
    """Dynamic programming over (n, w_B): the probability of each still-running state after every vote."""
    up, lo = rule.up, rule.lo
    first, mass = 0, [1.0]  # mass[i] = P(w_B = first + i and not stopped) at the current n
    challenger = champion = mean = 0.0
    for n in range(1, max_votes + 1):
        grown = [0.0] * (len(mass) + 1)
        for i, m in enumerate(mass):
            grown[i] += m * (1 - p)
            grown[i + 1] += m * p
        # keep the states that continue: -lo[n] < D < up[n], with D = 2 w_B - n
        w_low = max(first, (n - lo[n]) // 2 + 1 if lo[n] < NEVER else first)
        w_high = min(first + len(grown) - 1, (n + up[n] - 1) // 2 if up[n] < NEVER else n)
        stopped_up = math.fsum(grown[max(0, w_high + 1 - first) :])
        stopped_lo = math.fsum(grown[: max(0, w_low - first)])
        challenger += stopped_up
        champion += stopped_lo
        mean += n * (stopped_up + stopped_lo)
        mass = grown[w_low - first : w_high + 1 - first]
        first = w_low
        if not mass:
            break
    return Exact(p, challenger, champion, mean + max_votes * math.fsum(mass))


@dataclass(frozen=True)
class Summary:
    """Outcomes of one rule at one p."""

    p: float
    reps: int
    challenger: int
    champion: int
    stops: list[int]
    """Decisive votes at the stop, every run (no decision: MAX_VOTES)."""
    decided: list[int]
    """Decisive votes at the stop of the runs that ended with a decision, sorted."""

    def share(self, count: int) -> tuple[float, float]:
        """Proportion and its Monte Carlo standard error."""
        q = count / self.reps
        return q, math.sqrt(q * (1 - q) / self.reps)

    def quantile(self, q: float) -> tuple[int, int, int]:
        """Empirical quantile with a ~95 % order-statistic interval."""
        ordered = sorted(self.stops)
        centre = q * self.reps
        spread = 1.96 * math.sqrt(self.reps * q * (1 - q))

        def pick(rank: float) -> int:
            return ordered[min(self.reps - 1, max(0, math.ceil(rank) - 1))]

        return pick(centre), pick(centre - spread), pick(centre + spread)


def simulate(rule: Rule, p: float, reps: int, rng: random.Random) -> Summary:
    """reps tests at P(challenger preferred) = p."""
    bits = binary_expansion(p)
    mins = rule.suffix_min()
    challenger = champion = 0
    stops, decided = [], []
    for _ in range(reps):
        decision, n = walk(rule, mins, lambda k: binomial(k, bits, rng), MAX_VOTES)
        challenger += decision == "challenger"
        champion += decision == "champion"
        stops.append(n)
        if decision != "no_winner":
            decided.append(n)
    return Summary(p, reps, challenger, champion, stops, sorted(decided))


def fixed_horizon_power(p: float = 0.65, power: float = 0.8) -> tuple[int, float, float]:
    """A one-look test sized for `power` at p (normal approximation): its votes, and its exact power as a
    two-sided z-test and as an exact two-sided binomial test, both at 0.05."""
    z_beta = statistics.NormalDist().inv_cdf(power)
    n = math.ceil(((Z_975 * 0.5 + z_beta * math.sqrt(p * (1 - p))) / (p - 0.5)) ** 2)
    pmf = [math.comb(n, w) * p**w * (1 - p) ** (n - w) for w in range(n + 1)]
    z_need = math.ceil(Z_975 * math.sqrt(n))
    z_power = sum(pmf[w] for w in range(n + 1) if 2 * w - n >= z_need)
    exact_need = next(
        w for w in range(n // 2 + 1, n + 1) if 2 * sum(math.comb(n, v) for v in range(w, n + 1)) <= 0.05 * 2**n
    )
    return n, z_power, sum(pmf[exact_need:])


def kl_from_fair(p: float) -> float:
    """KL(p || 1/2) per decisive vote: the oracle's expected log-wealth gain per vote."""
    return p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))


def _fmt_share(summary: Summary, count: int) -> str:
    q, se = summary.share(count)
    return f"{q:.4f} ± {se:.4f}"


def report(rule: Rule, results: list[Summary], exacts: list[Exact]) -> None:
    """Print one markdown table for a rule."""
    print(f"\n#### {rule.name}\n")
    print(
        "| p | P(challenger promoted) | P(champion decided) | mean votes at stop | exact mean | median [95 % CI] "
        "| p90 [95 % CI] | no decision by 5000 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s, e in zip(results, exacts, strict=True):
        mean = statistics.fmean(s.stops)
        se = statistics.stdev(s.stops) / math.sqrt(s.reps) if s.reps > 1 else 0.0
        med, med_lo, med_hi = s.quantile(0.5)
        p90, p90_lo, p90_hi = s.quantile(0.9)
        undecided = s.reps - s.challenger - s.champion
        print(
            f"| {s.p:.2f} | {_fmt_share(s, s.challenger)} | {_fmt_share(s, s.champion)} | {mean:.1f} ± {se:.1f} "
            f"| {e.mean_votes:.1f} | {med} [{med_lo}, {med_hi}] | {p90} [{p90_lo}, {p90_hi}] "
            f"| {undecided / s.reps:.4f} |"
        )
    null = next(s for s in results if s.p == 0.5)
    null_exact = next(e for e in exacts if e.p == 0.5)
    promoted = len(null.decided)
    by = ", ".join(f"{h}: {sum(n <= h for n in null.decided) / null.reps:.4f}" for h in (10, 100, 1000, MAX_VOTES))
    median = null.decided[promoted // 2] if promoted else "n/a"
    print(
        f"\nAt p = 0.5 ({null.reps} runs): a winner is called {_fmt_share(null, promoted)} "
        f"(exactly {null_exact.challenger + null_exact.champion:.4f}; challenger alone "
        f"{_fmt_share(null, null.challenger)}); by n = {by}; median votes at a false promotion {median}."
    )


def comparison(rows: list[tuple[str, list[Summary], list[Exact]]]) -> None:
    """One table for every rule: false promotions, power, wrong promotions and mean votes, MC and exact."""
    alternatives = [p for p in PROBABILITIES if p > 0.5]
    print("\n### All rules side by side\n")
    print(
        "Monte Carlo (± one standard error), the exact value in brackets. False: a winner called at p = 0.5; "
        "power / worse: challenger promoted / champion decided at p = 0.55.\n"
    )
    head = " | ".join(f"mean votes p = {p}" for p in alternatives)
    print(f"| rule | false | power | worse | {head} |")
    print("|---" * (4 + len(alternatives)) + "|")
    for name, results, exacts in rows:
        at = {s.p: s for s in results}
        ex = {e.p: e for e in exacts}
        null, weak = at[0.5], at[0.55]
        cells = [
            f"{_fmt_share(null, null.challenger + null.champion)} [{ex[0.5].challenger + ex[0.5].champion:.4f}]",
            f"{_fmt_share(weak, weak.challenger)} [{ex[0.55].challenger:.5f}]",
            f"{_fmt_share(weak, weak.champion)} [{ex[0.55].champion:.5f}]",
        ]
        for p in alternatives:
            stops = at[p].stops
            se = statistics.stdev(stops) / math.sqrt(len(stops)) if len(stops) > 1 else 0.0
            cells.append(f"{statistics.fmean(stops):.1f} ± {se:.1f} [{ex[p].mean_votes:.1f}]")
        print(f"| {name} | " + " | ".join(cells) + " |")


def champion_side(rules: list[Rule]) -> None:
    """The other half of each two-sided test, exactly: a worse challenger (p < 1/2) is caught, and how soon."""
    print("\n### The champion's side (exact)\n")
    print("P(champion decided) / mean decisive votes to a stop when the challenger is worse (p < 0.5).\n")
    print("| rule | " + " | ".join(f"p = {p}" for p in CHAMPION_SIDE) + " |")
    print("|---" * (1 + len(CHAMPION_SIDE)) + "|")
    for rule in rules:
        cells = []
        for p in CHAMPION_SIDE:
            e = exact(rule, p)
            cells.append(f"{e.champion:.5f} / {e.mean_votes:.1f}")
        print(f"| {rule.name} | " + " | ".join(cells) + " |")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulation and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=100_000, help="tests simulated per rule and p")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--check-paths", type=int, default=200, help="paths replayed through assess per method")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    started = time.perf_counter()

    operator_rules = {
        method: (rule_from_assess(f"operator: {method}", settings), settings)
        for method, settings in (
            ("msprt", DEFAULT),
            ("bayes-factor", TestSettings("bayes-factor", ALPHA, 0.1, MIN_VOTES, MAX_VOTES, None)),
            ("one-sided", TestSettings("one-sided", ALPHA, 0.1, MIN_VOTES, MAX_VOTES, None)),
            ("betting", TestSettings("betting", ALPHA, 0.1, MIN_VOTES, MAX_VOTES, None)),
            ("betting, version 1", TestSettings("betting", ALPHA, 0.1, MIN_VOTES, MAX_VOTES, None, method_version=1)),
        )
    }
    print(f"tables from assess: {time.perf_counter() - started:.1f}s")
    compared = check_against_assess(operator_rules, args.check_paths, rng)
    print(f"walker == assess after every vote on {compared} explicit paths ({time.perf_counter() - started:.1f}s)")
    check_binomial(rng)
    print("binomial sampler: mean and variance match at p in (0.5, 0.55, 0.8), k in (1, 7, 300)")

    n_fixed, z_power, exact_power = fixed_horizon_power()
    print(
        f"fixed horizon sized for 80 % power at p = 0.65: {n_fixed} votes; true power {z_power:.3f} as a z-test, "
        f"{exact_power:.3f} as an exact binomial test (one look only)"
    )
    wald = [math.log(k / ALPHA) / kl_from_fair(ORACLE_P) for k in (2, 1)]
    print(
        f"oracle SPRT at p = {ORACLE_P}, Wald's approximation (no overshoot): {wald[0]:.1f} votes two-sided, "
        f"{wald[1]:.1f} one-sided"
    )
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, reps {args.reps}, seed {args.seed}")

    rules = [rule for rule, _ in operator_rules.values()]
    rules += [oracle_rule(), oracle_rule(two_sided=False), course_ui_rule(), naive_z_rule()]
    rows = []
    for rule in rules:
        t0 = time.perf_counter()
        results = [simulate(rule, p, args.reps, rng) for p in PROBABILITIES]
        exacts = [exact(rule, p) for p in PROBABILITIES]
        report(rule, results, exacts)
        print(f"({time.perf_counter() - t0:.1f}s)")
        rows.append((rule.name, results, exacts))
    comparison(rows)
    champion_side([rule for rule, _ in operator_rules.values()])
    print(f"\ntotal {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
