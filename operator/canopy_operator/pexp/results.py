"""``kubectl pexp results``: an evaluation run's per-case results, read from the Secrets the operator wrote.

The operator records a run's results in ``status.evaluations[k].results``::

    {"secrets": ["<job>-results-0", ...], "cases": N, "truncated": bool, "unavailable": "why none"}

Each Secret's key ``results.jsonl`` holds one JSON object per case::

    {"i": 0, "suite": "feedback_eval_tests", "input_sha256": "<16 hex>", "unreviewed": true,
     "champion": {"subset_of": 1.0, "llm_as_judge": "A", "judge_reason": "..."},
     "challenger": {...}, "pairwise": {"winner": "challenger", "challenger_position": 1, "reason": "..."},
     "error": null}

All of it is read as untrusted: only Secret names of the run's own form (``<job>-results-<n>``) are followed,
the text read is bounded, a line that is not such an object is skipped with a note, a field of another shape is
shown as ``?`` (and counted in a note), every string is cleaned and cut. When a run has no ``results`` (an older
operator, or a CRD that prunes the field) the command looks for ``<job>-results-0``, ``-1``, ... by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canopy_operator.pexp.fields import boolean, clean, dig, integer, items, mapping, number, text

RESULTS_KEY = "results.jsonl"
MAX_SECRETS = 64
"""Result Secrets followed per run at most."""
MAX_SECRET_BYTES = 1_048_576
"""Bytes read of one Secret's results.jsonl at most (what a Secret can hold)."""
MAX_LINE = 65_536
"""A longer line is skipped."""
MAX_CASES = 10_000
"""Cases kept at most; more are counted and dropped."""
MAX_NOTES = 20
WINNERS = ("challenger", "champion", "tie")
REASON_LIMIT = 2_000
ERROR_COLUMN = 40
_HEX16 = re.compile(r"[0-9a-f]{16}")
_JOB_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?")


@dataclass(frozen=True)
class Arm:
    subset_of: float | None = None
    llm_as_judge: str | None = None
    judge_reason: str | None = None


@dataclass(frozen=True)
class Case:
    i: int | None
    suite: str | None
    input_sha256: str | None
    unreviewed: bool | None
    champion: Arm
    challenger: Arm
    winner: str | None
    challenger_position: int | None
    pairwise_reason: str | None
    error: str | None
    odd_fields: int = 0
    """Fields present with an unexpected shape (shown as ``?``)."""


@dataclass(frozen=True)
class RunRef:
    """A run of ``status.evaluations`` and where its results are."""

    name: str
    state: str
    secrets: tuple[str, ...]
    declared_cases: int | None
    truncated: bool | None
    recorded: bool
    """Whether the run names its Secrets (``results``); False: look for them by name."""
    notes: tuple[str, ...] = ()
    unavailable: str | None = None
    """Why the operator could not collect per-case results (``results.unavailable``)."""


@dataclass
class Parsed:
    cases: list[Case] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dropped: int = 0
    odd_fields: int = 0

    def note(self, message: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(message)
        elif len(self.notes) == MAX_NOTES:
            self.notes.append("(more notes left out)")


class NoRun(Exception):
    """There is no run to show (exit 1, the message says why)."""


def secret_name_for(run: str, index: int) -> str:
    """The name of the run's ``index``-th result Secret."""
    return f"{run}-results-{index}"


def _own_secret(run: str, name: object) -> bool:
    return isinstance(name, str) and re.fullmatch(re.escape(run) + r"-results-[0-9]{1,4}", name) is not None


def runs(status: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The runs of ``status.evaluations`` that have a name, oldest first."""
    return [r for r in items(dig(status, "evaluations"), 50) if isinstance(dig(r, "name"), str) and r["name"]]


def select_run(status: Mapping[str, Any] | None, name: str | None) -> RunRef:
    """The run named ``name``, else the newest; :class:`NoRun` when there is none."""
    known = runs(status)
    if not known:
        raise NoRun("the experiment has no evaluation runs (status.evaluations is empty)")
    if name is None:
        chosen = known[-1]
    else:
        match = [r for r in known if r["name"] == name]
        if not match:
            names = ", ".join(clean(r["name"], 80) for r in known[-10:])
            raise NoRun(f"no evaluation run {clean(name, 80)} in status.evaluations (runs: {names})")
        chosen = match[-1]
    run_name: str = chosen["name"]
    if not _JOB_NAME.fullmatch(run_name):
        raise NoRun(f"the run's name {clean(run_name, 80)!r} is not a Job name")
    state = text(dig(chosen, "state"), 20) or "?"
    results = dig(chosen, "results")
    notes: list[str] = []
    if results is None:
        return RunRef(run_name, state, (), None, None, recorded=False)
    if not isinstance(results, Mapping):
        notes.append("status.evaluations[].results is not an object; looking for the result Secrets by name")
        return RunRef(run_name, state, (), None, None, recorded=False, notes=tuple(notes))
    raw = dig(results, "secrets")
    named = items(raw, MAX_SECRETS + 1)
    if raw is not None and not isinstance(raw, list):
        notes.append("results.secrets is not a list")
    if len(named) > MAX_SECRETS:
        notes.append(f"only the first {MAX_SECRETS} result Secrets are read")
        named = named[:MAX_SECRETS]
    secrets: list[str] = []
    for entry in named:
        if _own_secret(run_name, entry):
            if entry not in secrets:
                secrets.append(entry)
        else:
            notes.append(f"skipped result Secret {clean(entry, 80)!r}: not named {run_name}-results-<n>")
    cases = integer(dig(results, "cases"))
    return RunRef(
        run_name,
        state,
        tuple(secrets),
        cases if cases is not None and cases >= 0 else None,
        boolean(dig(results, "truncated")),
        recorded=True,
        notes=tuple(notes[:MAX_NOTES]),
        unavailable=text(dig(results, "unavailable"), 300),
    )


def parse(texts: Sequence[tuple[str, bytes]], into: Parsed | None = None) -> Parsed:
    """The cases in the ``results.jsonl`` texts (Secret name, bytes), in order."""
    out = into or Parsed()
    for secret, data in texts:
        if len(data) > MAX_SECRET_BYTES:
            out.note(f"{secret}: only the first {MAX_SECRET_BYTES} bytes are read")
            data = data[:MAX_SECRET_BYTES]
        body = data.decode("utf-8", errors="replace")
        bad: list[int] = []
        for number_, line in enumerate(body.split("\n"), start=1):
            if not line.strip():
                continue
            case = _case_from_line(line)
            if case is None:
                bad.append(number_)
                continue
            if len(out.cases) >= MAX_CASES:
                out.dropped += 1
                continue
            out.cases.append(case)
            out.odd_fields += case.odd_fields
        if bad:
            shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
            out.note(f"{secret}: skipped {len(bad)} line(s) that are not a result object (line {shown})")
    return out


def finish(parsed: Parsed) -> Parsed:
    """Add the notes on dropped cases and odd fields."""
    if parsed.dropped:
        parsed.note(f"{parsed.dropped} more case(s) beyond {MAX_CASES} left out")
    if parsed.odd_fields:
        parsed.note(f"{parsed.odd_fields} field(s) had an unexpected shape and are shown as ?")
    return parsed


class _Odd:
    def __init__(self) -> None:
        self.count = 0

    def take(self, obj: Mapping[str, Any], key: str, ok: bool) -> None:
        if key in obj and obj[key] is not None and not ok:
            self.count += 1


def _case_from_line(line: str) -> Case | None:
    if len(line) > MAX_LINE:
        return None
    try:
        obj = json.loads(line, strict=False)  # raw control characters are cleaned, not refused
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    odd = _Odd()
    i = integer(obj.get("i"))
    odd.take(obj, "i", i is not None)
    suite = text(obj.get("suite"), 60)
    odd.take(obj, "suite", suite is not None)
    raw_hash = obj.get("input_sha256")
    digest = raw_hash.lower() if isinstance(raw_hash, str) and _HEX16.fullmatch(raw_hash.lower()) else None
    odd.take(obj, "input_sha256", digest is not None)
    unreviewed = boolean(obj.get("unreviewed"))
    odd.take(obj, "unreviewed", unreviewed is not None)
    champion = _arm(obj, "champion", odd)
    challenger = _arm(obj, "challenger", odd)
    pairwise = mapping(obj.get("pairwise"))
    odd.take(obj, "pairwise", isinstance(obj.get("pairwise"), Mapping))
    winner_raw = pairwise.get("winner")
    winner = winner_raw if winner_raw in WINNERS else None
    odd.take(pairwise, "winner", winner is not None)
    position = integer(pairwise.get("challenger_position"))
    odd.take(pairwise, "challenger_position", position is not None)
    reason = text(pairwise.get("reason"), REASON_LIMIT)
    odd.take(pairwise, "reason", reason is not None)
    error_raw = obj.get("error")
    error = text(error_raw, REASON_LIMIT) if isinstance(error_raw, str) else None
    if error_raw is not None and error is None:
        error = clean(json.dumps(error_raw, default=str)[:REASON_LIMIT], REASON_LIMIT)
    return Case(
        i=i,
        suite=suite,
        input_sha256=digest,
        unreviewed=unreviewed,
        champion=champion,
        challenger=challenger,
        winner=winner,
        challenger_position=position,
        pairwise_reason=reason,
        error=error,
        odd_fields=odd.count,
    )


def _arm(obj: Mapping[str, Any], key: str, odd: _Odd) -> Arm:
    raw = obj.get(key)
    odd.take(obj, key, isinstance(raw, Mapping))
    arm = mapping(raw)
    subset = number(arm.get("subset_of"))
    odd.take(arm, "subset_of", subset is not None)
    grade = text(arm.get("llm_as_judge"), 16)
    odd.take(arm, "llm_as_judge", grade is not None)
    reason = text(arm.get("judge_reason"), REASON_LIMIT)
    odd.take(arm, "judge_reason", reason is not None)
    return Arm(subset, grade, reason)


# Output ------------------------------------------------------------------------------------------------


def _score(arm: Arm) -> str:
    subset = "-" if arm.subset_of is None else f"{arm.subset_of:.2f}"
    grade = "-" if arm.llm_as_judge is None else clean(arm.llm_as_judge, 6)
    return f"{subset}/{grade}"


def _flag(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


HEADERS = ("#", "INPUT", "UNREVIEWED", "CHAMPION", "CHALLENGER", "PAIRWISE", "ERROR")


def table(run: RunRef, parsed: Parsed) -> str:
    """The header line and one row per case; CHAMPION and CHALLENGER are ``subset_of/grade``."""
    rows = [
        (
            "?" if c.i is None else str(c.i),
            c.input_sha256 or "-",
            _flag(c.unreviewed),
            _score(c.champion),
            _score(c.challenger),
            c.winner or "-",
            "-" if c.error is None else clean(c.error, ERROR_COLUMN),
        )
        for c in parsed.cases
    ]
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(HEADERS)]
    lines = [summary(run, parsed)]
    lines.append("  ".join(h.ljust(widths[k]) for k, h in enumerate(HEADERS)).rstrip())
    lines.extend("  ".join(cell.ljust(widths[k]) for k, cell in enumerate(r)).rstrip() for r in rows)
    return "\n".join(lines) + "\n"


def summary(run: RunRef, parsed: Parsed) -> str:
    """``run <name> (Succeeded): 12 of 12 cases in 1 Secret, challenger 7, champion 3, tie 2``."""
    counts = {w: sum(1 for c in parsed.cases if c.winner == w) for w in WINNERS}
    declared = "" if run.declared_cases is None else f" of {run.declared_cases}"
    cut = ", truncated by the runner" if run.truncated else ""
    secrets = len(run.secrets)
    tally = ", ".join(f"{w} {counts[w]}" for w in WINNERS)
    plural = "" if secrets == 1 else "s"
    return (
        f"run {clean(run.name, 80)} ({clean(run.state, 20)}): {len(parsed.cases)}{declared} cases "
        f"in {secrets} Secret{plural}{cut}; pairwise {tally}"
    )


def as_json(run: RunRef, parsed: Parsed) -> str:
    """The run and its cases as one JSON document (the fields as read, cleaned and bounded)."""
    doc = {
        "run": run.name,
        "state": run.state,
        "secrets": list(run.secrets),
        "cases": run.declared_cases,
        "truncated": run.truncated,
        "results": [_case_json(c) for c in parsed.cases],
        "notes": [*run.notes, *parsed.notes],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _arm_json(arm: Arm) -> dict[str, Any]:
    return {"subset_of": arm.subset_of, "llm_as_judge": arm.llm_as_judge, "judge_reason": arm.judge_reason}


def _case_json(case: Case) -> dict[str, Any]:
    return {
        "i": case.i,
        "suite": case.suite,
        "input_sha256": case.input_sha256,
        "unreviewed": case.unreviewed,
        "champion": _arm_json(case.champion),
        "challenger": _arm_json(case.challenger),
        "pairwise": {
            "winner": case.winner,
            "challenger_position": case.challenger_position,
            "reason": case.pairwise_reason,
        },
        "error": case.error,
    }
