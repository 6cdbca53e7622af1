"""A PNG encoder with the standard library only (zlib and struct): 8-bit RGB, no interlace.

Each scanline is filtered with Up (type 2) except the first (None), which makes the plot's long runs of equal
rows compress to almost nothing.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 10_000


def chunk(kind: bytes, data: bytes) -> bytes:
    """One chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_rgb(width: int, height: int, pixels: bytes | bytearray) -> bytes:
    """The PNG file of ``pixels`` (``width * height`` RGB triples, row by row, top row first)."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ValueError(f"a PNG of {width}x{height} pixels is not supported")
    stride = width * 3
    if len(pixels) != stride * height:
        raise ValueError(f"expected {stride * height} bytes of RGB pixels, got {len(pixels)}")
    raw = bytearray()
    previous = bytes(stride)
    for y in range(height):
        row = bytes(pixels[y * stride : (y + 1) * stride])
        if y == 0:
            raw.append(0)
            raw += row
        else:
            raw.append(2)
            raw += bytes((a - b) & 0xFF for a, b in zip(row, previous, strict=True))
        previous = row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")
