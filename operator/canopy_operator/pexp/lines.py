"""``kubectl pexp watch``: one line per observed change of the status.

A line shows the time it was seen, the phase, the votes (challenger, champion, ties), the confidence sequence,
the p-value and the message. A line is printed only when one of those changed (:func:`line_key`), so a status
write that touches only internal fields (the read position in the backend) prints nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from canopy_operator.pexp.fields import clean, dig, integer, number, pvalue, rate

TERMINAL_PHASES = frozenset({"Concluded", "Aborted"})
MESSAGE_LIMIT = 120


def phase(obj: Mapping[str, Any]) -> str:
    value = dig(obj, "status", "phase")
    return clean(value, 24) if isinstance(value, str) and value else "-"


def is_terminal(obj: Mapping[str, Any]) -> bool:
    """Whether the experiment reached a phase the watch ends at (Concluded or Aborted)."""
    return dig(obj, "status", "phase") in TERMINAL_PHASES


def _count(obj: Mapping[str, Any], key: str) -> str:
    value = integer(dig(obj, "status", "votes", key))
    return "?" if value is None else str(value)


def confidence(obj: Mapping[str, Any]) -> str:
    """``[0.412, 0.871]`` or ``-`` (no confidence sequence yet, or one of another shape)."""
    cs = dig(obj, "status", "evidence", "confidenceSequence")
    lower, upper = number(dig(cs, "lower")), number(dig(cs, "upper"))
    if lower is None or upper is None:
        return "-"
    return f"[{rate(lower)}, {rate(upper)}]"


def line_key(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """What a watch line shows, without the time: a new line is printed when this changes."""
    return (
        phase(obj),
        _count(obj, "challengerWins"),
        _count(obj, "championWins"),
        _count(obj, "ties"),
        confidence(obj),
        pvalue(number(dig(obj, "status", "evidence", "pValue"))),
        clean(dig(obj, "status", "message"), MESSAGE_LIMIT),
    )


def watch_line(obj: Mapping[str, Any], seen_at: datetime) -> str:
    """``10:00:03Z  Running           votes 18:7 ties 2  CS [0.412, 0.871]  p 0.2310  message``."""
    ph, challenger, champion, ties, cs, p, message = line_key(obj)
    when = seen_at.astimezone(UTC).strftime("%H:%M:%SZ")
    return f"{when}  {ph:<16}  votes {challenger}:{champion} ties {ties}  CS {cs}  p {p}  {message}".rstrip()


def header() -> str:
    """What the numbers of a watch line mean (printed once, first)."""
    return "TIME       PHASE             votes CHALLENGER:CHAMPION ties N  CS [LOWER, UPPER]  p P-VALUE  MESSAGE"
