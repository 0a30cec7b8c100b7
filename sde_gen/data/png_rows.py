"""Whether a PNG file holds every row its header promises.

Pillow decodes a PNG whose compressed image data ends early but cleanly (a complete zlib stream
of 4 of 16 rows) without a word, filling the missing rows with black. The PNG specification
(ISO/IEC 15948, §7–8) fixes the size of the filtered image data: per (sub)image row one filter
byte and ⌈width · bits per pixel / 8⌉ bytes, over the seven Adam7 passes when interlaced.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

__all__ = ["png_missing_bytes"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA)."""
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))  # fmt: skip
"""(x start, y start, x step, y step) of the seven interlace passes."""


def filtered_size(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """Bytes of filtered image data: Σ over (sub)images of rows · (1 + ⌈cols · bpp / 8⌉)."""
    passes = ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        cols, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if cols > 0 and rows > 0:
            total += rows * (1 + -(-cols * bits_per_pixel // 8))
    return total


def png_missing_bytes(path: Path) -> int:
    """How many bytes of filtered image data ``path`` lacks (0 for a whole PNG; a file that is
    not a PNG, or whose chunks are cut, is left to Pillow and gives 0)."""
    data = path.read_bytes()
    if not data.startswith(SIGNATURE) or len(data) < 33:
        return 0
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if colour not in CHANNELS:
        return 0
    need = filtered_size(width, height, depth * CHANNELS[colour], interlace == 1)
    inflate, got, pos = zlib.decompressobj(), 0, 8
    while pos + 8 <= len(data) and got <= need:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            try:
                got += _inflated(inflate, data[pos + 8 : pos + 8 + length], need + 1 - got)
            except zlib.error:
                return 0  # Pillow names a corrupt stream itself
        pos += 12 + length
    return max(0, need - got)


def _inflated(inflate: zlib._Decompress, chunk: bytes, limit: int) -> int:
    """Bytes ``chunk`` inflates to, counting at most ``limit`` (a zlib bomb stays bounded)."""
    got = 0
    while chunk and got < limit:
        got += len(inflate.decompress(chunk, limit - got))
        chunk = inflate.unconsumed_tail
    return got
