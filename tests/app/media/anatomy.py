"""A GIF read the way an attacker reads it: every block, table and LZW code, without Pillow.

Written from the GIF89a spec (https://www.w3.org/Graphics/GIF/spec-gif89a.txt) and independent of
``app.media``, so that the tests judge the served bytes with a parser of their own, and decode LZW streams
with a decoder of their own (one more decoder besides Pillow that must accept the clear-code padding).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass
class Frame:
    gce: bytes  # the graphic control block before the image (b"" if none)
    descriptor: bytes  # 10 bytes from 0x2C
    local_table: bytes
    min_code_size: int
    sub_blocks: list[int]  # the length byte of every data sub-block, terminator excluded
    stream: bytes  # the LZW bytes, length bytes removed

    @property
    def disposal(self) -> int:
        return (self.gce[3] >> 2) & 7 if self.gce else -1

    @property
    def transparent(self) -> int:
        return self.gce[3] & 1 if self.gce else -1

    @property
    def delay_cs(self) -> int:
        return int.from_bytes(self.gce[4:6], "little") if self.gce else -1


@dataclass
class Gif:
    header: bytes  # the 13 bytes of signature and screen descriptor
    global_table: bytes
    frames: list[Frame] = field(default_factory=list)
    extensions: list[tuple[int, bytes, int]] = field(default_factory=list)  # (label, app id, body length)
    after_trailer: int = 0
    size: int = 0


def _sub_blocks(data: bytes, pos: int) -> tuple[list[int], bytes, int]:
    sizes, chunks = [], []
    while True:
        n = data[pos]
        pos += 1
        if n == 0:
            return sizes, b"".join(chunks), pos
        sizes.append(n)
        chunks.append(data[pos:pos + n])
        pos += n


def parse(data: bytes) -> Gif:
    assert data[:6] in (b"GIF87a", b"GIF89a"), data[:6]
    packed = data[10]
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    gif = Gif(header=data[:13], global_table=data[13:pos], size=len(data))
    gce = b""
    while pos < len(data):
        marker = data[pos]
        if marker == 0x3B:
            gif.after_trailer = len(data) - pos - 1
            return gif
        if marker == 0x21:
            label = data[pos + 1]
            start = pos
            sizes, body, pos = _sub_blocks(data, pos + 2)
            if label == 0xF9:
                gce = data[start:pos]
            else:
                app = body[:11] if label == 0xFF else b""
                gif.extensions.append((label, app, len(body)))
            continue
        assert marker == 0x2C, f"unexpected {marker:#x} at {pos}"
        descriptor = data[pos:pos + 10]
        pos += 10
        local = b""
        if descriptor[9] & 0x80:
            n = 3 << ((descriptor[9] & 7) + 1)
            local, pos = data[pos:pos + n], pos + n
        mcs = data[pos]
        sizes, stream, pos = _sub_blocks(data, pos + 1)
        gif.frames.append(Frame(gce, descriptor, local, mcs, sizes, stream))
        gce = b""
    return gif  # no trailer


def lzw_codes(min_code_size: int, stream: bytes) -> list[int]:
    """The codes of one image's LZW stream, up to and including the end code."""
    value, total = int.from_bytes(stream, "little"), 8 * len(stream)
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    width, next_code, prev, pos = min_code_size + 1, end + 1, None, 0
    codes = []
    while pos + width <= total:
        code = (value >> pos) & ((1 << width) - 1)
        pos += width
        codes.append(code)
        if code == clear:
            width, next_code, prev = min_code_size + 1, end + 1, None
            continue
        if code == end:
            break
        if prev is not None and next_code < 4096:
            next_code += 1
            if next_code == 1 << width and width < 12:
                width += 1
        prev = code
    return codes


def lzw_indices(min_code_size: int, stream: bytes) -> bytes:
    """Decode one image's LZW stream to palette indices (raises on a stream no decoder could follow)."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    out = bytearray()
    table: list[bytes] = [bytes([i]) for i in range(clear)] + [b"", b""]
    prev: int | None = None
    for code in lzw_codes(min_code_size, stream):
        if code == clear:
            del table[end + 1:]
            prev = None
            continue
        if code == end:
            return bytes(out)
        if code < len(table):
            entry = table[code]
        elif code == len(table) and prev is not None:
            entry = table[prev] + table[prev][:1]
        else:
            raise ValueError(f"code {code} is not in the table (next {len(table)})")
        out += entry
        if prev is not None and len(table) < 4096:
            table.append(table[prev] + entry[:1])
        prev = code
    raise ValueError("the stream has no end code")


def leading_clears(min_code_size: int, stream: bytes) -> int:
    codes = lzw_codes(min_code_size, stream)
    n = 0
    while n < len(codes) and codes[n] == 1 << min_code_size:
        n += 1
    return n


def _digest(data: bytes) -> float:
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big") / 2**32


def byte_features(data: bytes, *, palettes: bool = True) -> dict[str, float]:
    """Everything about a GIF's encoding that an attacker can read without looking at its pixels.

    The file's size and block layout, screen descriptor, colour-table placement and sizes, extensions and
    their lengths, bytes after the trailer, per frame the graphic control block (disposal, delay,
    transparency), descriptor (offset, size, flags), LZW minimum code size, image-data length and sub-block
    layout; with ``palettes``, the bytes of palette entries no pixel uses (which needs the LZW decoded to
    indices, not to colours). The frames' contents (their colours, how well they compress) are not encoding
    choices; that they tell nothing the pixels do not is tested in tests/security/test_byte_side_channels.py.
    """
    gif = parse(data)
    f: dict[str, float] = {
        "size": gif.size,
        "version": gif.header[4],
        "screen_packed": gif.header[10],
        "background": gif.header[11],
        "aspect": gif.header[12],
        "global_table": len(gif.global_table),
        "global_table_digest": _digest(gif.global_table),
        "extensions": len(gif.extensions),
        "extension_bytes": sum(n for _, _, n in gif.extensions),
        "extension_layout": _digest(repr(gif.extensions).encode()),
        "after_trailer": gif.after_trailer,
        "frames": len(gif.frames),
    }
    for i, frame in enumerate(gif.frames):
        table = frame.local_table or gif.global_table
        f |= {
            f"f{i}_gce": _digest(frame.gce[:4] + frame.gce[6:]),  # flags and transparent index
            f"f{i}_disposal": frame.disposal,
            f"f{i}_transparent": frame.transparent,
            f"f{i}_delay": frame.delay_cs,
            f"f{i}_descriptor": _digest(frame.descriptor),
            f"f{i}_local_table": len(frame.local_table),
            f"f{i}_min_code_size": frame.min_code_size,
            f"f{i}_data": len(frame.stream),
            f"f{i}_sub_blocks": len(frame.sub_blocks),
            f"f{i}_last_sub_block": frame.sub_blocks[-1] if frame.sub_blocks else 0,
            f"f{i}_sub_block_layout": _digest(bytes(frame.sub_blocks)),
        }
        if palettes:
            used = set(lzw_indices(frame.min_code_size, frame.stream))
            unused = b"".join(table[3 * k:3 * k + 3] for k in range(len(table) // 3) if k not in used)
            # How many entries are unused is the frame's colour count (content); what they hold is not.
            f[f"f{i}_unused_palette_nonzero"] = sum(1 for b in unused if b)
            f[f"f{i}_unused_palette_sum"] = sum(unused)
    return f
