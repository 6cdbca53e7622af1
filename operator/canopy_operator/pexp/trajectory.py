"""The confidence sequence over time (``status.trajectory``) as points to draw, and where it decided.

Each point is ``{at, decisiveVotes, lower, upper, pValue}``: after ``decisiveVotes`` decisive votes the
challenger's win rate lies in ``[lower, upper]`` (always valid). The decision point is the first point, in the
order the operator recorded them, whose band excludes 0.5 once the test's ``minVotes`` decisive votes are in
(before that the operator does not decide, whatever the band says). Between recorded points the band is interpolated
linearly in the number of votes (the operator thins the sequence to at most 120 points).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canopy_operator.pexp.fields import dig, integer, items, number

BOUNDARY = 0.5
MAX_POINTS = 1000
"""Points read at most (the operator keeps 120); the rest are ignored with a note."""


@dataclass(frozen=True)
class Point:
    votes: int
    lower: float
    upper: float
    p_value: float | None = None

    @property
    def decided(self) -> bool:
        """Whether this band excludes the 0.5 boundary."""
        return self.lower > BOUNDARY or self.upper < BOUNDARY


@dataclass(frozen=True)
class Trajectory:
    points: tuple[Point, ...]
    """Usable points in recorded order."""
    notes: tuple[str, ...] = ()
    """What was skipped and why."""
    min_votes: int = 0
    """The test's minVotes: no decision before it."""

    @property
    def decision(self) -> Point | None:
        """The first point with at least ``min_votes`` votes whose band excludes 0.5, if any."""
        return next((p for p in self.points if p.decided and p.votes >= self.min_votes), None)

    @property
    def ordered(self) -> tuple[Point, ...]:
        """The points by number of votes; of several at the same count, the one recorded last."""
        last: dict[int, Point] = {}
        for point in self.points:
            last[point.votes] = point
        return tuple(last[v] for v in sorted(last))

    @property
    def max_votes(self) -> int:
        return max((p.votes for p in self.points), default=0)

    def band_at(self, votes: float) -> tuple[float, float] | None:
        """The band at ``votes``, interpolated between the neighbouring points; None outside them."""
        ordered = self.ordered
        if not ordered or votes < ordered[0].votes or votes > ordered[-1].votes:
            return None
        for left, right in itertools.pairwise(ordered):
            if left.votes <= votes <= right.votes:
                span = right.votes - left.votes
                t = 0.0 if span == 0 else (votes - left.votes) / span
                return (left.lower + t * (right.lower - left.lower), left.upper + t * (right.upper - left.upper))
        return (ordered[-1].lower, ordered[-1].upper)


def parse(status: Mapping[str, Any] | None) -> Trajectory:
    """The usable points of ``status.trajectory`` (any other shape is skipped with a note)."""
    raw = dig(status, "trajectory")
    entries = items(raw, MAX_POINTS + 1)
    notes: list[str] = []
    if raw is not None and not isinstance(raw, list):
        notes.append("status.trajectory is not a list; nothing to plot")
    if len(entries) > MAX_POINTS:
        notes.append(f"only the first {MAX_POINTS} points of status.trajectory are used")
        entries = entries[:MAX_POINTS]
    points: list[Point] = []
    skipped = 0
    for entry in entries:
        point = _point(entry)
        if point is None:
            skipped += 1
        else:
            points.append(point)
    if skipped:
        notes.append(
            f"skipped {skipped} point(s) of status.trajectory with an unexpected shape "
            "(decisiveVotes >= 0, 0 <= lower <= upper <= 1)"
        )
    min_votes = integer(dig(status, "test", "minVotes"))
    return Trajectory(tuple(points), tuple(notes), min_votes if min_votes is not None and min_votes > 0 else 0)


def _point(entry: object) -> Point | None:
    votes = integer(dig(entry, "decisiveVotes"))
    lower, upper = number(dig(entry, "lower")), number(dig(entry, "upper"))
    if votes is None or lower is None or upper is None:
        return None
    if votes < 0 or votes > 10**9 or not 0.0 <= lower <= upper <= 1.0:
        return None
    p = number(dig(entry, "pValue"))
    return Point(votes, lower, upper, p if p is not None and 0.0 <= p <= 1.0 else None)
