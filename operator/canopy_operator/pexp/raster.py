"""The confidence-sequence plot as RGB pixels: axes, grid, the band, the 0.5 boundary and the decision point.

x is the number of decisive votes (0 to the last point's), y the challenger's win rate (0 at the bottom, 1 at
the top). Drawn in this order, each over the last: white background, light grid (0.25, 0.5, 0.75 and the x
ticks), the band between lower and upper (light blue) with its edges (blue), the boundary y = 0.5 across the
whole plot area (red), the decision point (an orange disc on the band's edge nearest 0.5, the only orange
inside the plot area), then the axes and the labels outside the plot area. :class:`Layout` maps values to
pixels (tests use it to find them).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from canopy_operator.pexp import font
from canopy_operator.pexp.png import encode_rgb
from canopy_operator.pexp.trajectory import BOUNDARY, Trajectory

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)
GRID: RGB = (222, 222, 222)
AXIS: RGB = (0, 0, 0)
TEXT: RGB = (48, 48, 48)
BAND: RGB = (173, 205, 245)
EDGE: RGB = (31, 96, 196)
BOUNDARY_COLOUR: RGB = (214, 39, 40)
MARKER: RGB = (255, 140, 0)
MARKER_RADIUS = 5
GRID_RATES = (0.25, 0.5, 0.75, 1.0)
WIDTH, HEIGHT = 640, 360


class Canvas:
    """An RGB image in memory; drawing outside it is ignored."""

    def __init__(self, width: int, height: int, background: RGB = WHITE) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def get(self, x: int, y: int) -> RGB:
        i = (y * self.width + x) * 3
        return (self.pixels[i], self.pixels[i + 1], self.pixels[i + 2])

    def set(self, x: int, y: int, colour: RGB) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(colour)

    def hline(self, x0: int, x1: int, y: int, colour: RGB) -> None:
        if not 0 <= y < self.height:
            return
        lo, hi = max(0, min(x0, x1)), min(self.width - 1, max(x0, x1))
        if lo <= hi:
            start = (y * self.width + lo) * 3
            self.pixels[start : start + (hi - lo + 1) * 3] = bytes(colour) * (hi - lo + 1)

    def vline(self, x: int, y0: int, y1: int, colour: RGB) -> None:
        for y in range(min(y0, y1), max(y0, y1) + 1):
            self.set(x, y, colour)

    def line(self, x0: int, y0: int, x1: int, y1: int, colour: RGB) -> None:
        """Bresenham's line, both ends included."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.set(x0, y0, colour)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def disc(self, cx: int, cy: int, radius: int, colour: RGB) -> None:
        for y in range(cy - radius, cy + radius + 1):
            for x in range(cx - radius, cx + radius + 1):
                if (x - cx) ** 2 + (y - cy) ** 2 <= radius * radius:
                    self.set(x, y, colour)

    def text(self, x: int, y: int, text: str, colour: RGB = TEXT) -> None:
        """``text`` with its top-left corner at (x, y), in the 5x7 font."""
        for n, ch in enumerate(text):
            rows = font.glyph(ch)
            if rows is None:
                continue
            for dy, row in enumerate(rows):
                for dx, cell in enumerate(row):
                    if cell == "#":
                        self.set(x + n * font.ADVANCE + dx, y + dy, colour)


@dataclass(frozen=True)
class Layout:
    """Where the plot area is (inclusive pixel bounds) and how values map to pixels."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    max_votes: int

    def x(self, votes: float) -> int:
        """The pixel column of ``votes`` decisive votes."""
        return self.left + round(votes / self.max_votes * (self.right - self.left))

    def votes(self, x: int) -> float:
        """The number of votes at pixel column ``x`` (the inverse of :meth:`x`)."""
        return (x - self.left) / (self.right - self.left) * self.max_votes

    def y(self, rate: float) -> int:
        """The pixel row of win rate ``rate`` (1.0 at the top)."""
        return self.bottom - round(rate * (self.bottom - self.top))


def layout(trajectory: Trajectory, width: int = WIDTH, height: int = HEIGHT) -> Layout:
    return Layout(
        width=width,
        height=height,
        left=46,
        right=width - 18,
        top=30,
        bottom=height - 40,
        max_votes=max(1, trajectory.max_votes),
    )


def ticks(maximum: int, most: int = 8) -> list[int]:
    """Round tick values from 0 to ``maximum`` (steps of 1, 2 or 5 times a power of ten)."""
    if maximum <= 0:
        return [0]
    raw = maximum / most
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next((m * power for m in (1, 2, 5, 10) if m * power >= raw), 10 * power)
    step = max(1, int(step))
    return list(range(0, maximum + 1, step))


def render(trajectory: Trajectory, width: int = WIDTH, height: int = HEIGHT) -> tuple[Canvas, Layout]:
    """The plot of ``trajectory`` and its layout."""
    geo = layout(trajectory, width, height)
    canvas = Canvas(width, height)
    # grid
    for rate in GRID_RATES:
        canvas.hline(geo.left, geo.right, geo.y(rate), GRID)
    x_ticks = ticks(geo.max_votes)
    for tick in x_ticks[1:]:
        canvas.vline(geo.x(tick), geo.top, geo.bottom, GRID)
    # the band
    ordered = trajectory.ordered
    if ordered:
        first, last = geo.x(ordered[0].votes), geo.x(ordered[-1].votes)
        if first == last:
            for x in (first - 1, first, first + 1):
                canvas.vline(x, geo.y(ordered[0].upper), geo.y(ordered[0].lower), BAND)
        else:
            for x in range(first, last + 1):
                band = trajectory.band_at(min(max(geo.votes(x), ordered[0].votes), ordered[-1].votes))
                if band is not None:
                    canvas.vline(x, geo.y(band[1]), geo.y(band[0]), BAND)
        for a, b in itertools.pairwise(ordered):
            canvas.line(geo.x(a.votes), geo.y(a.lower), geo.x(b.votes), geo.y(b.lower), EDGE)
            canvas.line(geo.x(a.votes), geo.y(a.upper), geo.x(b.votes), geo.y(b.upper), EDGE)
    # the boundary, then the decision
    canvas.hline(geo.left, geo.right, geo.y(BOUNDARY), BOUNDARY_COLOUR)
    decision = trajectory.decision
    if decision is not None:
        edge = decision.lower if decision.lower > BOUNDARY else decision.upper
        cx, cy = geo.x(decision.votes), geo.y(edge)
        canvas.disc(cx, cy, MARKER_RADIUS, MARKER)
        label = f"n={decision.votes}"
        lx = min(cx + MARKER_RADIUS + 3, geo.right - font.text_width(label))
        ly = cy - 12 if edge > BOUNDARY else cy + MARKER_RADIUS + 3
        canvas.text(lx, ly, label, TEXT)
    # axes, ticks and labels outside the plot area
    canvas.vline(geo.left - 1, geo.top, geo.bottom + 1, AXIS)
    canvas.hline(geo.left - 1, geo.right, geo.bottom + 1, AXIS)
    for rate in (0.0, *GRID_RATES):
        y = geo.y(rate)
        canvas.hline(geo.left - 5, geo.left - 2, y, AXIS)
        label = f"{rate:.2f}"
        canvas.text(geo.left - 8 - font.text_width(label), y - 3, label)
    for tick in x_ticks:
        x = geo.x(tick)
        canvas.vline(x, geo.bottom + 2, geo.bottom + 5, AXIS)
        label = str(tick)
        canvas.text(x - font.text_width(label) // 2, geo.bottom + 9, label)
    title = "decisive votes"
    canvas.text((geo.left + geo.right - font.text_width(title)) // 2, geo.bottom + 24, title)
    canvas.text(geo.left - 40, 8, "challenger win rate: confidence sequence")
    _legend(canvas, geo)
    return canvas, geo


def _legend(canvas: Canvas, geo: Layout) -> None:
    entries = (("band", BAND), ("0.5", BOUNDARY_COLOUR), ("decision", MARKER))
    total = sum(12 + font.text_width(label) + 12 for label, _ in entries)
    x = geo.right - total
    for label, colour in entries:
        for dy in range(7):
            canvas.hline(x, x + 8, 8 + dy, colour)
        canvas.text(x + 12, 8, label)
        x += 12 + font.text_width(label) + 12


def plot_png(trajectory: Trajectory, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """The plot as a PNG file."""
    canvas, _ = render(trajectory, width, height)
    return encode_rgb(canvas.width, canvas.height, canvas.pixels)
