"""``kubectl pexp plot --terminal``: the confidence sequence in 72x17 characters, and the trajectory reader."""

from __future__ import annotations

from typing import Any

from canopy_operator.pexp import termplot
from canopy_operator.pexp.trajectory import parse

PLOT_ROWS = termplot.ROWS


def status(points: list[tuple[Any, Any, Any]]) -> dict[str, Any]:
    return {
        "trajectory": [
            {"at": "2026-01-02T10:00:00Z", "decisiveVotes": n, "lower": lo, "upper": hi, "pValue": 0.04}
            for n, lo, hi in points
        ]
    }


DECIDING = [(8, 0.05, 0.95), (72, 0.3, 0.7), (144, 0.52, 0.8), (288, 0.6, 0.75)]


def plot_cells(text: str) -> list[str]:
    """The 17 rows of cells (the characters right of the axis)."""
    return [line.split(termplot.AXIS, 1)[1] for line in text.splitlines()[:PLOT_ROWS]]


def test_the_plot_is_72_columns_by_17_rows_with_axes_and_a_legend() -> None:
    text = termplot.render(parse(status(DECIDING)))
    lines = text.splitlines()
    assert len(lines) == PLOT_ROWS + 3
    cells = plot_cells(text)
    assert all(len(row) == 72 for row in cells)
    assert len({len(line) for line in lines[:PLOT_ROWS]}) == 1  # aligned
    assert lines[0].startswith(" 1.00 ")
    assert lines[8].startswith(" 0.50 ")
    assert lines[16].startswith(" 0.00 ")
    assert lines[PLOT_ROWS].strip().startswith(termplot.CORNER)
    assert lines[PLOT_ROWS + 1].rstrip().endswith("288 decisive votes")
    assert "decision at 144 votes" in lines[-1]


def test_the_boundary_row_is_a_rule_crossed_by_the_band_until_the_decision() -> None:
    cells = plot_cells(termplot.render(parse(status(DECIDING))))
    boundary = cells[8]
    assert set(boundary) <= {termplot.RULE, termplot.RULE_IN_BAND, termplot.MARKER}
    # up to 144 votes (column 36) the band contains 0.5; after it the rule is clear
    assert termplot.RULE_IN_BAND in boundary[5:30]
    assert set(boundary[38:]) == {termplot.RULE}


def test_band_cells_lie_between_lower_and_upper() -> None:
    cells = plot_cells(termplot.render(parse(status(DECIDING))))
    column = 18  # centre at 18.5 * 4 = 74 votes: about [0.31, 0.71]
    filled = [r for r in range(PLOT_ROWS) if cells[r][column] in (termplot.FULL, termplot.UPPER, termplot.LOWER)]
    rates = [1 - r / 16 for r in filled]
    assert min(rates) >= 0.25
    assert max(rates) <= 0.75
    assert cells[2][column] == " "  # 0.875 is above the band
    assert cells[14][column] == " "  # 0.125 is below it


def test_the_marker_is_at_the_decision_point() -> None:
    cells = plot_cells(termplot.render(parse(status(DECIDING))))
    found = [(r, c) for r in range(PLOT_ROWS) for c in range(72) if cells[r][c] == termplot.MARKER]
    # 144 of 288 votes is column 36; the lower edge 0.52 rounds to the 0.5 row
    assert found == [(8, 36)]


def test_without_a_decision_there_is_no_marker() -> None:
    text = termplot.render(parse(status([(10, 0.1, 0.9), (100, 0.4, 0.6)])))
    assert termplot.MARKER not in "\n".join(text.splitlines()[:PLOT_ROWS])
    assert "no decision" in text.splitlines()[-1]


def test_a_single_point_and_an_empty_trajectory_render() -> None:
    one = plot_cells(termplot.render(parse(status([(30, 0.2, 0.45)]))))
    assert sum(row.count(termplot.FULL) for row in one) >= 3
    empty = termplot.render(parse({"trajectory": []}))
    assert len(empty.splitlines()) == PLOT_ROWS + 3


def test_hostile_points_are_skipped_with_a_note() -> None:
    hostile: dict[str, Any] = {
        "trajectory": [
            {"decisiveVotes": 10, "lower": 0.2, "upper": 0.8},
            {"decisiveVotes": "20", "lower": 0.2, "upper": 0.8},
            {"decisiveVotes": 30, "lower": 0.9, "upper": 0.1},
            {"decisiveVotes": 40, "lower": -1, "upper": 2},
            {"decisiveVotes": True, "lower": 0.2, "upper": 0.8},
            {"decisiveVotes": 50, "lower": float("nan"), "upper": 0.8},
            "not a point",
            None,
            {"decisiveVotes": 60, "lower": 0.55, "upper": 0.7, "pValue": "small"},
        ]
    }
    traj = parse(hostile)
    assert [(p.votes, p.lower, p.upper, p.p_value) for p in traj.points] == [
        (10, 0.2, 0.8, None),
        (60, 0.55, 0.7, None),
    ]
    assert traj.notes
    assert "skipped 7 point(s)" in traj.notes[0]
    assert traj.decision is not None
    assert traj.decision.votes == 60
    assert parse({"trajectory": "oops"}).notes == ("status.trajectory is not a list; nothing to plot",)
    assert parse(None).points == ()


def test_the_band_is_interpolated_between_points_in_vote_order() -> None:
    traj = parse(status([(100, 0.4, 0.6), (0, 0.0, 1.0), (100, 0.3, 0.7)]))  # out of order; 100 twice
    assert traj.band_at(50) == (0.15, 0.85)  # between (0, 0, 1) and the last point at 100
    assert traj.band_at(101) is None
    assert traj.decision is None
