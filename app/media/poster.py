"""A clip's first frame as a lossless PNG at its native size (the pair page's poster), written so that its bytes
depend on the pixels alone and can be grown to a group's length without a block anyone could count.

Why a poster: on a phone the pair page's largest paint is a clip, and a clip is all its frames' bytes; the
first frame alone is a small share of them. It is the exact first frame (no resampling, no lossy step): for a
GIF the frame's own colours, for MP4/WebM the first decoded frame converted to RGB by FFmpeg (the browser's own
YUV->RGB conversion may round differently by a level; the player seeks to the real frame at once, see
static/js/pair.js).

Why it is written here and not by Pillow's PNG writer: the layout must be the same for every clip of a group
(one IHDR, for GIFs one PLTE of 256 entries, one IDAT, IEND; no text, time, gamma or physical-size chunk), the
bytes a function of the pixels only (palette entries in colour order, not the GIF's keyed order; one fixed
filter; zlib at level 9), and the length growable inside the deflate stream: ``pad_png`` adds empty deflate
blocks before the stream's final block, so Content-Length and the chunk layout are the same for every clip of a
prompt, as for the clips themselves (app/web/media.py). What a deflate parser can still read, how well the
first frame compresses, is a function of the pixels the evaluator is shown anyway.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The smallest growth pad_png can always make (any d >= 10 is a sum of 5, 6 and 7, the empty-block runs below).
MIN_GROWTH = 10


class PosterError(ValueError):
    """The first frame could not be read."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def first_frame(data: bytes, fmt: str) -> np.ndarray:
    """The first frame, H x W x 3 uint8 RGB, of a GIF, MP4 or WebM clip."""
    try:
        if fmt == "gif":
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                im.seek(0)
                return np.asarray(im.convert("RGB"))
        import av  # FFmpeg's libraries load only where videos are handled

        with av.open(io.BytesIO(data), mode="r") as container:
            for frame in container.decode(video=0):
                return np.asarray(frame.to_ndarray(format="rgb24"))
    except (OSError, ValueError, av_error()) as exc:
        raise PosterError(f"the clip's first frame cannot be decoded: {exc}") from exc
    raise PosterError("the clip has no video frame")


def av_error() -> type[Exception]:
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency; without it only GIFs have posters
        return OSError
    return av.error.FFmpegError


def png(rgb: np.ndarray, *, palette: bool) -> bytes:
    """The frame as PNG: palette (256 entries, in colour order) when ``palette``, else RGB with the Up filter."""
    h, w = rgb.shape[:2]
    if palette:
        flat = rgb.reshape(-1, 3)
        colours, index = np.unique(flat, axis=0, return_inverse=True)
        if len(colours) > 256:
            raise PosterError(f"a GIF frame with {len(colours)} colours")
        table = np.zeros((256, 3), np.uint8)
        table[: len(colours)] = colours
        rows = index.reshape(h, w).astype(np.uint8)
        raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 on every row
        header = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
        body = _chunk(b"IHDR", header) + _chunk(b"PLTE", table.tobytes())
    else:
        rows = rgb.reshape(h, w * 3).astype(np.int16)
        up = np.empty_like(rows)
        up[0] = rows[0]
        up[1:] = rows[1:] - rows[:-1]
        raw = np.concatenate([np.full((h, 1), 2, np.uint8), (up % 256).astype(np.uint8)], axis=1).tobytes()
        header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        body = _chunk(b"IHDR", header)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 15, 9)
    # The stream ends with a sync flush (byte-aligned, an empty stored block) and then its final block, so
    # pad_png can put empty blocks between the two.
    stream = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH) + compressor.flush(zlib.Z_FINISH)
    return PNG_SIGNATURE + body + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def _empty_blocks(n_fixed: int) -> bytes:
    """``n_fixed`` empty fixed-Huffman blocks then one empty stored block: 5, 6 or 7 bytes for 0, 1 or 2."""
    bits: list[int] = []
    for _ in range(n_fixed):
        bits += [0, 1, 0] + [0] * 7  # BFINAL 0, BTYPE 01 (LSB first), end-of-block (code 256 = 0000000)
    bits += [0, 0, 0]  # BFINAL 0, BTYPE 00: a stored block
    bits += [0] * (-len(bits) % 8)
    head = bytes(sum(b << i for i, b in enumerate(bits[k:k + 8])) for k in range(0, len(bits), 8))
    return head + b"\x00\x00\xff\xff"  # LEN 0, NLEN


def _growth(d: int) -> bytes:
    if d == 0:
        return b""
    if d < MIN_GROWTH:
        raise ValueError(f"cannot grow a poster by {d} bytes (at least {MIN_GROWTH})")
    runs = {0: [], 1: [1], 2: [2], 3: [1, 2], 4: [2, 2]}[d % 5]
    fives = (d - sum(5 + r for r in runs)) // 5
    return b"".join(_empty_blocks(r) for r in runs) + _empty_blocks(0) * fives


def pad_png(data: bytes, target: int) -> bytes:
    """``data`` (from ``png``) grown to ``target`` bytes inside its IDAT's deflate stream; the image is unchanged."""
    d = target - len(data)
    if d < 0:
        raise ValueError("a poster cannot shrink")
    if d == 0:
        return data
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[at:at + 4])
    stream = data[at + 8:at + 8 + length]
    # png() ends the stream with a sync flush's empty stored block, the final block and the Adler-32; the new
    # blocks go right after the sync flush (byte-aligned), before the final block.
    flush_end = len(stream) - 6  # the final block is an empty fixed block (2 bytes), then the Adler-32
    if stream[flush_end - 4:flush_end] != b"\x00\x00\xff\xff" or stream[flush_end:flush_end + 2] != b"\x03\x00":
        raise ValueError("not a poster written by png()")
    grown = stream[:flush_end] + _growth(d) + stream[flush_end:]
    return data[:at] + _chunk(b"IDAT", grown) + data[at + 12 + length:]


def equal_target(lengths: list[int]) -> int:
    """The one length every poster of a group is served at: the longest grown by at least ``MIN_GROWTH``, so
    each of them (the longest too) is grown, and grown in the same way."""
    return max(lengths) + MIN_GROWTH
