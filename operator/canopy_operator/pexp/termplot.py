"""The confidence-sequence plot in text: 72 columns by 17 rows of block characters, for a terminal.

Row ``r`` of ``rows`` stands for the win rate ``1 - r / (rows - 1)`` (so the middle row is exactly 0.5, and
with 17 rows the rows 4 and 12 are 0.75 and 0.25); column ``c`` for the votes at its centre. A cell shows
``█`` where the band covers both halves of its row, ``▀``/``▄`` where it covers only the upper/lower half,
``─`` on the 0.5 boundary where the band excludes 0.5 and ``╪`` where it contains it, ``·`` on the
0.25/0.75 grid, and ``◆`` at the decision point. Axis labels on the left, the votes below, a legend last.
"""

from __future__ import annotations

from canopy_operator.pexp.trajectory import BOUNDARY, Trajectory

FULL, UPPER, LOWER = "\u2588", "\u2580", "\u2584"
RULE, RULE_IN_BAND, GRID, MARKER = "\u2500", "\u256a", "\u00b7", "\u25c6"
AXIS, CORNER = "\u2502", "\u2514"
COLUMNS, ROWS = 72, 17
LABEL_WIDTH = 5


def _rate(row: int, rows: int) -> float:
    return 1.0 - row / (rows - 1)


def _cell(band: tuple[float, float] | None, centre: float, half: float, grid: bool, boundary: bool) -> str:
    upper = band is not None and band[0] <= centre + half and band[1] >= centre
    lower = band is not None and band[0] <= centre and band[1] >= centre - half
    if boundary:
        return RULE_IN_BAND if band is not None and band[0] <= centre <= band[1] else RULE
    if upper and lower:
        return FULL
    if upper:
        return UPPER
    if lower:
        return LOWER
    return GRID if grid else " "


def render(trajectory: Trajectory, columns: int = COLUMNS, rows: int = ROWS) -> str:
    """The plot as ``rows + 3`` lines (the plot, the axis, its labels, a legend)."""
    columns, rows = max(8, columns), max(5, rows | 1)  # an odd number of rows puts 0.5 on one
    half = 0.5 / (rows - 1)
    ordered = trajectory.ordered
    max_votes = max(1, trajectory.max_votes)
    per_column = max_votes / columns
    bands = [trajectory.band_at((c + 0.5) * per_column) for c in range(columns)]
    if len(ordered) == 1:  # a single point is a band at one column
        bands = [None] * columns
        bands[min(columns - 1, int(ordered[0].votes / per_column))] = (ordered[0].lower, ordered[0].upper)
    grid_rows = {round((1 - rate) * (rows - 1)) for rate in (0.25, 0.75)}
    boundary_row = (rows - 1) // 2
    cells = [
        [_cell(bands[c], _rate(r, rows), half, r in grid_rows, r == boundary_row) for c in range(columns)]
        for r in range(rows)
    ]
    decision = trajectory.decision
    if decision is not None:
        col = min(columns - 1, int(decision.votes / per_column))
        edge = decision.lower if decision.lower > BOUNDARY else decision.upper
        row = min(rows - 1, max(0, round((1 - edge) * (rows - 1))))
        cells[row][col] = MARKER
    lines = []
    for r in range(rows):
        rate = _rate(r, rows)
        label = f"{rate:.2f}" if r in grid_rows or r in (0, boundary_row, rows - 1) else ""
        lines.append(f"{label:>{LABEL_WIDTH}} {AXIS}{''.join(cells[r])}")
    lines.append(f"{'':>{LABEL_WIDTH}} {CORNER}{RULE * columns}")
    right = f"{trajectory.max_votes} decisive votes"
    lines.append(f"{'':>{LABEL_WIDTH}}  0{right:>{columns - 1}}")
    lines.append(legend(trajectory))
    return "\n".join(lines) + "\n"


def legend(trajectory: Trajectory) -> str:
    decision = trajectory.decision
    if decision is None:
        where = "no decision: every band contains 0.5"
    else:
        p = "" if decision.p_value is None else f", p {decision.p_value:.4g}"
        where = f"{MARKER} decision at {decision.votes} votes ({decision.lower:.3f}-{decision.upper:.3f}{p})"
    return f"{FULL} confidence sequence  {RULE} 0.5 boundary  {where}"
