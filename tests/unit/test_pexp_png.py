"""``kubectl pexp plot -o FILE.png``: a real PNG, decoded here independently (chunks, CRCs, inflate, unfilter),
showing the band between lower and upper, the 0.5 boundary across the plot area and the decision point."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import pytest

from canopy_operator.pexp import raster
from canopy_operator.pexp.png import SIGNATURE, encode_rgb
from canopy_operator.pexp.trajectory import Trajectory, parse

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rows: list[list[RGB]]
    chunks: list[bytes]

    def at(self, x: int, y: int) -> RGB:
        return self.rows[y][x]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> Image:
    """A strict decoder of 8-bit RGB, non-interlaced PNGs (what the plot writes); fails on anything else."""
    assert data[:8] == SIGNATURE, "not a PNG signature"
    pos, chunks, idat, header = 8, [], b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in chunk {kind!r}"
        chunks.append(kind)
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert chunks[0] == b"IHDR"
    assert chunks[-1] == b"IEND"
    assert b"IDAT" in chunks
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(idat)
    stride, bpp = width * 3, 3
    assert len(raw) == height * (stride + 1)
    previous = bytearray(stride)
    rows: list[list[RGB]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
            else:
                assert kind == 0, f"unknown filter type {kind}"
        rows.append([(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, 3)])
        previous = line
    return Image(width, height, rows, chunks)


def trajectory(points: list[tuple[int, float, float]]) -> Trajectory:
    return parse(
        {
            "trajectory": [
                {"at": "2026-01-02T10:00:00Z", "decisiveVotes": n, "lower": lo, "upper": hi, "pValue": 0.5}
                for n, lo, hi in points
            ]
        }
    )


# A test that starts wide, narrows, and is decided at 200 votes (band [0.62, 0.78], well above 0.5).
DECIDING = [(10, 0.05, 0.95), (50, 0.2, 0.85), (100, 0.3, 0.7), (150, 0.45, 0.75), (200, 0.62, 0.78), (300, 0.63, 0.75)]


@pytest.fixture(scope="module")
def deciding() -> tuple[Image, raster.Layout]:
    traj = trajectory(DECIDING)
    image = decode_png(raster.plot_png(traj))
    return image, raster.layout(traj)


def test_the_encoder_round_trips_every_pixel() -> None:
    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 1, 2, 3, 250, 251, 252, 0, 0, 0])
    image = decode_png(encode_rgb(3, 2, pixels))
    assert (image.width, image.height) == (3, 2)
    assert image.rows == [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(1, 2, 3), (250, 251, 252), (0, 0, 0)]]


def test_a_corrupted_chunk_fails_the_crc_check() -> None:
    data = bytearray(encode_rgb(2, 2, bytes(12)))
    data[20] ^= 0xFF  # inside IHDR's data
    with pytest.raises(AssertionError, match="bad CRC"):
        decode_png(bytes(data))


def test_the_plot_is_a_640_by_360_rgb_png_and_not_blank(deciding: tuple[Image, raster.Layout]) -> None:
    image, _ = deciding
    assert (image.width, image.height) == (640, 360)
    colours = {pixel for row in image.rows for pixel in row}
    assert {raster.WHITE, raster.BAND, raster.EDGE, raster.BOUNDARY_COLOUR, raster.MARKER, raster.AXIS} <= colours
    non_white = sum(1 for row in image.rows for pixel in row if pixel != raster.WHITE)
    assert non_white > 640 * 360 // 10


def test_the_boundary_row_is_the_boundary_colour_across_the_plot_area(
    deciding: tuple[Image, raster.Layout],
) -> None:
    image, geo = deciding
    row = geo.y(0.5)
    assert row == (geo.top + geo.bottom + 1) // 2 or row == (geo.top + geo.bottom) // 2
    assert [image.at(x, row) for x in range(geo.left, geo.right + 1)] == [raster.BOUNDARY_COLOUR] * (
        geo.right - geo.left + 1
    )
    # and it is the only such row: the rows next to it are not the boundary
    for other in (row - 2, row + 2):
        assert image.at(geo.left + 3, other) != raster.BOUNDARY_COLOUR


def test_band_pixels_lie_between_lower_and_upper(deciding: tuple[Image, raster.Layout]) -> None:
    image, geo = deciding
    for votes, lower, upper in [(100, 0.3, 0.7), (50, 0.2, 0.85)]:
        x = geo.x(votes)
        top, bottom = geo.y(upper), geo.y(lower)
        inside = [y for y in range(top + 2, bottom - 1) if y != geo.y(0.5)]
        assert inside, "the band is at least a few pixels high"
        assert all(image.at(x, y) == raster.BAND for y in inside), f"not all band at {votes} votes"
        above = range(geo.top, top - 2)
        below = range(bottom + 3, geo.bottom + 1)
        assert not any(image.at(x, y) in (raster.BAND, raster.EDGE) for y in [*above, *below])
    # between two points the band is interpolated: at 125 votes, lower 0.375, upper 0.725
    x = geo.x(125)
    column = [y for y in range(geo.top, geo.bottom + 1) if image.at(x, y) in (raster.BAND, raster.EDGE)]
    assert abs(min(column) - geo.y(0.725)) <= 2
    assert abs(max(column) - geo.y(0.375)) <= 2


def test_the_marker_is_at_the_decision_point(deciding: tuple[Image, raster.Layout]) -> None:
    image, geo = deciding
    orange = [
        (x, y)
        for y in range(geo.top, geo.bottom + 1)
        for x in range(geo.left, geo.right + 1)
        if image.at(x, y) == raster.MARKER
    ]
    assert orange, "no decision marker"
    cx = sum(x for x, _ in orange) / len(orange)
    cy = sum(y for _, y in orange) / len(orange)
    # the first point whose band excludes 0.5 is (200, 0.62, 0.78); the marker sits on its edge nearest 0.5
    assert abs(cx - geo.x(200)) <= 1
    assert abs(cy - geo.y(0.62)) <= 1
    assert 60 <= len(orange) <= 100  # a disc of radius 5, nothing else orange in the plot area


def test_no_marker_when_every_band_contains_the_boundary() -> None:
    traj = trajectory([(10, 0.1, 0.9), (80, 0.35, 0.7), (160, 0.42, 0.58)])
    image = decode_png(raster.plot_png(traj))
    geo = raster.layout(traj)
    assert traj.decision is None
    plot_area = (image.at(x, y) for y in range(geo.top, geo.bottom + 1) for x in range(geo.left, geo.right + 1))
    assert raster.MARKER not in set(plot_area)
    assert image.at(geo.x(80), geo.y(0.5)) == raster.BOUNDARY_COLOUR


def test_a_champion_win_is_marked_on_the_upper_edge() -> None:
    traj = trajectory([(20, 0.2, 0.8), (120, 0.2, 0.45), (200, 0.22, 0.4)])
    image = decode_png(raster.plot_png(traj))
    geo = raster.layout(traj)
    assert image.at(geo.x(120), geo.y(0.45)) == raster.MARKER
    assert image.at(geo.x(200), geo.y(0.45)) != raster.MARKER


def test_a_single_point_is_drawn() -> None:
    traj = trajectory([(40, 0.3, 0.6)])
    image = decode_png(raster.plot_png(traj))
    geo = raster.layout(traj)
    assert image.at(geo.x(40), geo.y(0.4)) == raster.BAND


def test_ticks_are_round_numbers() -> None:
    assert raster.ticks(300) == [0, 50, 100, 150, 200, 250, 300]
    assert raster.ticks(7) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert raster.ticks(0) == [0]
    assert len(raster.ticks(1_000_000)) <= 9


def test_the_decision_point_waits_for_min_votes() -> None:
    from canopy_operator.pexp.trajectory import parse

    status = {
        "test": {"minVotes": 30},
        "trajectory": [
            {"decisiveVotes": 0, "lower": 0.0, "upper": 1.0},
            {"decisiveVotes": 27, "lower": 0.506, "upper": 1.0},  # excludes 0.5, but before minVotes
            {"decisiveVotes": 37, "lower": 0.504, "upper": 1.0},
        ],
    }
    decision = parse(status).decision
    assert decision is not None
    assert decision.votes == 37
    assert parse({**status, "test": {}}).decision is not None
    assert parse({**status, "test": {}}).decision.votes == 27  # type: ignore[union-attr]
