"""Reading untrusted JSON: every value the API server returns may have any shape, length or characters.

Each accessor returns a value of the expected type or ``None`` (never raises), and :func:`clean` makes any value
printable on one bounded terminal line: control and formatting characters (ANSI escapes, bidi overrides, line
breaks) become ``?`` so a status message cannot rewrite the user's terminal.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

ELLIPSIS = "\u2026"
_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def clean(value: object, limit: int = 200) -> str:
    """``value`` as one printable line of at most ``limit`` characters (an ellipsis marks a cut)."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        text = str(value)
    else:
        text = f"<{type(value).__name__}>"
    raw = text[: limit + 1]
    out = "".join(_printable(ch) for ch in raw)
    if len(text) > limit:
        return out[: max(0, limit - 1)] + ELLIPSIS
    return out


def _printable(ch: str) -> str:
    if ch in "\t\n\r":
        return " "
    return "?" if unicodedata.category(ch) in _UNPRINTABLE else ch


def mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def items(value: object, limit: int) -> list[Any]:
    """The first ``limit`` elements of ``value`` if it is a JSON array, else none."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value[:limit])
    return []


def dig(value: object, *path: str) -> Any:
    """``value[path[0]][path[1]]...``, or None where the path leaves the JSON objects."""
    current: Any = value
    for key in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current


def text(value: object, limit: int = 200) -> str | None:
    """A string value, cleaned; None if it is not a string."""
    return clean(value, limit) if isinstance(value, str) else None


def integer(value: object) -> int | None:
    """A whole number (an int, or a float with no fraction), not a bool; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return None


def number(value: object) -> float | None:
    """A finite number, not a bool; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def boolean(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def timestamp(value: object) -> datetime | None:
    """An RFC 3339 time as the API server writes it (``2026-01-02T10:00:00Z``); None otherwise."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str:
    """``2026-01-02T10:00:00Z`` (UTC, seconds), or ``-``."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float | None) -> str:
    """``3m20s``, ``1h02m``, ``45s``; ``-`` for None or a negative or absurd value."""
    if seconds is None or seconds < 0 or seconds > 10 * 365 * 86400:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def age(since: datetime | None, now: datetime) -> str:
    """How long ago ``since`` was, like kubectl's AGE column."""
    if since is None:
        return "-"
    return duration(max(0.0, (now - since).total_seconds()))


def rate(value: float | None, digits: int = 3) -> str:
    """A probability with ``digits`` decimals, or ``-``."""
    return "-" if value is None else f"{value:.{digits}f}"


def pvalue(value: float | None) -> str:
    """A p-value: four decimals, or ``3.2e-06`` below 0.0001; ``-`` if unknown."""
    if value is None:
        return "-"
    if value < 1e-4:
        return f"{value:.1e}"
    return f"{value:.4f}"
