"""The runner's per-case lines, read back from its pod's log: progress while it runs, results once it ends.

The runner prints one ``evaluation_case`` JSON line per finished case on stdout (``evals.cli``)::

    {"event": "evaluation_case", "done": 12, "total": 1000, "eta_seconds": 88.1,
     "case": {"i": 3, "suite": "...", "input_sha256": "...", "unreviewed": true,
              "champion": {"subset_of": 1.0, "llm_as_judge": "A", "judge_reason": "..."},
              "challenger": {...}, "pairwise": {"winner": "challenger", "challenger_position": 1, "reason": "..."},
              "error": null}}

The log is whatever the pod printed, so it is read as hostile: lines that are too long, not JSON, or not
of this shape are skipped; every kept field is re-built from known keys with bounded types and lengths,
so what the operator stores is what it checked. :func:`shard` packs the records into JSON-lines texts
under a Secret's size, in case order; cases beyond ``max_cases`` or the shard budget are left out and
counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CASE_EVENT = "evaluation_case"
#: A log line longer than this is not one of the runner's (its records stay near 2 KB).
MAX_LINE_BYTES = 8192
#: Per-case text fields kept at most this long.
MAX_TEXT = 300
#: Bytes of one results Secret's ``results.jsonl`` (a Secret holds at most 1 MiB).
SHARD_BYTES = 512 * 1024
#: Secrets one run's results may use.
MAX_SHARDS = 64
_SIDES = ("champion", "challenger")
_WINNERS = ("champion", "challenger", "tie")


@dataclass(frozen=True)
class CaseProgress:
    """The last progress the runner reported."""

    done: int
    total: int
    eta_seconds: float | None


@dataclass(frozen=True)
class CaseLog:
    """What a log held: the validated records by case index, the last progress, lines skipped."""

    records: dict[int, dict[str, Any]]
    progress: CaseProgress | None
    skipped: int


def _count(value: object, limit: int = 10_000_000) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit:
        return value
    return None


def _text(value: object, limit: int = MAX_TEXT) -> str | None:
    if not isinstance(value, str):
        return None
    flat = " ".join(value.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _score(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _side(raw: object) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    side: dict[str, Any] = {}
    if "subset_of" in raw:
        side["subset_of"] = _score(raw["subset_of"])
    if "llm_as_judge" in raw:
        side["llm_as_judge"] = _text(raw["llm_as_judge"], 20)
        side["judge_reason"] = _text(raw.get("judge_reason"))
    return side


def _case(raw: object) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    index = _count(raw.get("i"))
    digest = raw.get("input_sha256")
    if index is None or not isinstance(digest, str) or len(digest) != 16 or not digest.isalnum():
        return None
    record: dict[str, Any] = {
        "i": index,
        "suite": _text(raw.get("suite"), 100) or "",
        "input_sha256": digest.lower(),
        "unreviewed": raw.get("unreviewed") is True,
    }
    for name in _SIDES:
        side = _side(raw.get(name))
        if side is not None:
            record[name] = side
    pairwise = raw.get("pairwise")
    if isinstance(pairwise, Mapping):
        winner = pairwise.get("winner")
        position = pairwise.get("challenger_position")
        record["pairwise"] = {
            "winner": winner if winner in _WINNERS else None,
            "challenger_position": position if position in (1, 2) else None,
            "reason": _text(pairwise.get("reason")),
        }
    record["error"] = _text(raw.get("error"))
    return record


def _progress(raw: Mapping[str, Any]) -> CaseProgress | None:
    done, total = _count(raw.get("done")), _count(raw.get("total"))
    if done is None or total is None or done > total:
        return None
    eta = _score(raw.get("eta_seconds"))
    return CaseProgress(done=done, total=total, eta_seconds=None if eta is None or eta < 0 else round(eta, 1))


def read_case_log(text: str, *, max_cases: int) -> CaseLog:
    """The runner's case lines in ``text`` (other lines, e.g. stderr's, are skipped silently); the last
    record of a case index wins; indices at or beyond ``max_cases`` are dropped."""
    records: dict[int, dict[str, Any]] = {}
    progress: CaseProgress | None = None
    skipped = 0
    for line in text.splitlines():
        if CASE_EVENT not in line:
            continue
        if len(line.encode("utf-8", "replace")) > MAX_LINE_BYTES:
            skipped += 1
            continue
        try:
            raw = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if not isinstance(raw, dict) or raw.get("event") != CASE_EVENT:
            skipped += 1
            continue
        record = _case(raw.get("case"))
        if record is None or record["i"] >= max_cases:
            skipped += 1
            continue
        records[record["i"]] = record
        progress = _progress(raw) or progress
    return CaseLog(records=records, progress=progress, skipped=skipped)


def last_progress(text: str) -> CaseProgress | None:
    """The newest progress in a log's tail (a case index is not needed for that)."""
    for line in reversed(text.splitlines()):
        if CASE_EVENT not in line or len(line.encode("utf-8", "replace")) > MAX_LINE_BYTES:
            continue
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if isinstance(raw, dict) and raw.get("event") == CASE_EVENT:
            found = _progress(raw)
            if found is not None:
                return found
    return None


def shard(records: Mapping[int, Mapping[str, Any]]) -> tuple[list[str], int]:
    """JSON-lines texts of at most :data:`SHARD_BYTES` each, in case order, at most :data:`MAX_SHARDS` of
    them; and how many records did not fit."""
    shards: list[str] = []
    current: list[str] = []
    size = 0
    left_out = 0
    for index in sorted(records):
        line = json.dumps(records[index], separators=(",", ":"), ensure_ascii=False) + "\n"
        length = len(line.encode("utf-8"))
        if size + length > SHARD_BYTES and current:
            shards.append("".join(current))
            current, size = [], 0
        if len(shards) >= MAX_SHARDS:
            left_out += 1
            continue
        current.append(line)
        size += length
    if current and len(shards) < MAX_SHARDS:
        shards.append("".join(current))
    return shards, left_out


def describe_progress(done: int, total: int, eta_seconds: float | None) -> str:
    """``120/1000 cases, about 4m left``."""
    text = f"{done}/{total} cases"
    if eta_seconds is not None and done < total:
        minutes, seconds = divmod(int(eta_seconds), 60)
        text += f", about {minutes}m left" if minutes else f", about {seconds}s left"
    return text
