"""Animated GIFs: inspect (Pillow) and strip anything that could name the model, keeping every pixel.

``sanitize_gif`` works on the GIF block structure (GIF89a spec, https://www.w3.org/Graphics/GIF/spec-gif89a.txt)
instead of decoding and re-encoding with Pillow: Pillow's writer re-quantises palettes, merges identical
consecutive frames and rewrites disposal, so a re-encoded clip would not be the clip the model produced. Copying
image blocks byte for byte keeps the frames identical by construction.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageSequence, UnidentifiedImageError

MAX_FRAMES = 2000
MAX_SIDE = 4096
# Browsers show GIF frame delays of 0 or 1 centisecond as 100 ms (Chromium and Firefox both do), so that is
# the delay a viewer sees and the one fps is computed from.
BROWSER_MIN_DELAY_MS = 20
BROWSER_DEFAULT_DELAY_MS = 100

KEEP_APPLICATIONS = {b"NETSCAPE2.0"}  # the looping extension; everything else (XMP, ICC, encoder ids) goes


class GifError(ValueError):
    """A file that is not a usable animated GIF; the message says why."""


@dataclass(frozen=True)
class GifInfo:
    width: int
    height: int
    frames: int
    durations_ms: tuple[int, ...]
    loop: int | None  # 0 = forever, N = N extra plays, None = no looping extension (plays once)
    extensions: tuple[str, ...] = field(default=())  # non-image blocks found, e.g. "comment", "app:XMP DataXMP"

    @property
    def animated(self) -> bool:
        return self.frames > 1

    @property
    def shown_durations_ms(self) -> tuple[int, ...]:
        return tuple(d if d >= BROWSER_MIN_DELAY_MS else BROWSER_DEFAULT_DELAY_MS for d in self.durations_ms)

    @property
    def mixed_durations(self) -> bool:
        return len(set(self.shown_durations_ms)) > 1

    @property
    def fps(self) -> float:
        """Frames per second as a browser plays it (from the mean frame delay), rounded to 0.01."""
        shown = self.shown_durations_ms
        return round(1000 * len(shown) / sum(shown), 2)

    def describe(self) -> str:
        timing = f"{self.fps:g} fps" + (" (mixed frame delays)" if self.mixed_durations else "")
        return f"{self.frames} frames, {self.width}x{self.height}, {timing}"


def inspect_gif(data: bytes) -> GifInfo:
    """Decode every frame of ``data``; ``GifError`` says what is wrong with a file that is not a GIF."""
    if not data.startswith((b"GIF87a", b"GIF89a")):
        raise GifError("not a GIF file (it does not start with GIF87a/GIF89a)")
    extensions = tuple(kind for kind, _ in _walk_extensions(data))
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "GIF":
                raise GifError(f"not a GIF file (Pillow reads it as {im.format})")
            width, height = im.size
            if width > MAX_SIDE or height > MAX_SIDE:
                raise GifError(f"{width}x{height} is larger than the {MAX_SIDE}px limit")
            n = getattr(im, "n_frames", 1)
            if n > MAX_FRAMES:
                raise GifError(f"{n} frames is more than the {MAX_FRAMES}-frame limit")
            loop = im.info.get("loop")
            durations = []
            for frame in ImageSequence.Iterator(im):
                frame.load()
                durations.append(int(frame.info.get("duration", 0) or 0))
    except GifError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise GifError(f"cannot be decoded as a GIF ({exc})") from exc
    return GifInfo(width=width, height=height, frames=len(durations), durations_ms=tuple(durations), loop=loop,
                   extensions=extensions)


def decode_frames(data: bytes) -> list[Image.Image]:
    """Every frame as RGBA, composited the way a viewer shows it (for comparisons and thumbnails)."""
    with Image.open(io.BytesIO(data)) as im:
        return [frame.convert("RGBA") for frame in ImageSequence.Iterator(im)]


# --- the block structure -----------------------------------------------------------------------------------


_TRUNCATED = "the GIF is truncated (it ends in the middle of a block)"


def colour_table_size(packed: int) -> int:
    """The bytes of the colour table announced by a screen or image descriptor's packed byte (0: none)."""
    return 3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0


def sub_blocks_end(data: bytes, pos: int) -> int | None:
    """The offset just after the run of data sub-blocks at ``pos`` (each a length byte and that many bytes, up
    to a zero length), or None if ``data`` ends first. Only the length bytes are read, never the data."""
    n = len(data)
    while pos < n:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
    return None


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise GifError(_TRUNCATED)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def sub_blocks(self) -> bytes:
        """Raw sub-blocks up to and including the zero-length terminator."""
        start = self.pos
        end = sub_blocks_end(self.data, start)
        if end is None:
            raise GifError(_TRUNCATED)
        self.pos = end
        return self.data[start:end]


def _blocks(data: bytes):
    """Yield ``(kind, raw_bytes, detail)`` for the header and every block of a GIF."""
    r = _Reader(data)
    header = r.take(13)
    if header[:6] not in (b"GIF87a", b"GIF89a"):
        raise GifError("not a GIF file (it does not start with GIF87a/GIF89a)")
    packed = header[10]
    gct = r.take(colour_table_size(packed))
    yield "header", header + gct, b""
    while True:
        if r.pos == len(data):  # no trailer: many encoders stop after the last frame; browsers accept it
            yield "trailer", b"\x3b", b""
            return
        introducer = r.take(1)[0]
        if introducer == 0x3B:  # trailer; anything after it is dropped
            yield "trailer", b"\x3b", b""
            return
        if introducer == 0x2C:
            start = r.pos - 1
            desc = r.take(9)
            r.take(colour_table_size(desc[8]))
            r.take(1)  # LZW minimum code size
            r.sub_blocks()
            yield "image", data[start : r.pos], b""
        elif introducer == 0x21:
            start = r.pos - 1
            label = r.take(1)[0]
            body_start = r.pos
            r.sub_blocks()
            raw = data[start : r.pos]
            if label == 0xF9:
                yield "gce", raw, b""
            elif label == 0xFE:
                yield "comment", raw, b""
            elif label == 0x01:
                yield "plaintext", raw, b""
            elif label == 0xFF:
                size = data[body_start]
                yield "app", raw, data[body_start + 1 : body_start + 1 + size]
            else:
                yield f"ext-{label:02x}", raw, b""
        else:
            raise GifError(f"unexpected byte {introducer:#04x} at offset {r.pos - 1}: the GIF is damaged")


def _walk_extensions(data: bytes):
    try:
        for kind, _raw, detail in _blocks(data):
            if kind == "app":
                yield f"app:{detail.decode('latin-1')}", detail
            elif kind in ("comment", "plaintext") or kind.startswith("ext-"):
                yield kind, detail
    except GifError:
        return  # Pillow's decoding reports damage with a better message


def join_gifs(parts: list[bytes]) -> bytes:
    """One animated GIF playing the frames of ``parts`` in order: the first part's header, screen and looping,
    then every part's frames, each with its timing block and its own colour table.

    The worker encodes a clip in parts, one per core, and joins them (worker/gif.py): LZW and gifsicle are
    single-threaded, and every frame of a GIF is a separate LZW stream, so nothing but bytes needs moving.
    A later part's frames that used that part's global colour table get it as their local table; the
    parts must share one screen size and start with a full frame (Pillow and gifsicle write each file's
    first frame whole), so no frame depends on a frame of another part.
    """
    if not parts:
        raise GifError("nothing to join")
    out = bytearray()
    screen = None
    for index, part in enumerate(parts):
        pending_gce = b""
        for kind, raw, detail in _blocks(part):
            if kind == "header":
                if screen is None:
                    screen = raw[6:10]
                    out += raw
                elif raw[6:10] != screen:
                    raise GifError("the parts of a GIF must share one screen size")
                packed = raw[10]
                gct, gct_bits = (raw[13:], packed & 7) if packed & 0x80 else (b"", 0)
            elif kind == "gce":
                pending_gce = raw
            elif kind == "image":
                if index and gct and not raw[9] & 0x80:
                    # Keep the interlace flag (0x40); a local table, unsorted, of the global table's size.
                    raw = raw[:9] + bytes([0x80 | (raw[9] & 0x40) | gct_bits]) + gct + raw[10:]
                out += pending_gce + raw
                pending_gce = b""
            elif kind == "app" and index == 0 and detail in KEEP_APPLICATIONS:
                out += raw
    out += b"\x3b"
    return bytes(out)


def sanitize_gif(data: bytes) -> bytes:
    """Drop comments, plain-text blocks, unknown extensions and every application extension except NETSCAPE
    looping (XMP, ICC profiles, encoder tags), and anything after the trailer. Image blocks, colour tables and
    frame timing are copied byte for byte, so every decoded frame is unchanged."""
    out = bytearray()
    pending_gce = b""
    saw_trailer = False
    for kind, raw, detail in _blocks(data):
        if kind == "header":
            out += raw
        elif kind == "gce":
            # A graphic control extension belongs to the next graphic block; it is held back so that the one
            # in front of a dropped plain-text block does not end up timing the next frame instead.
            pending_gce = raw
        elif kind == "image":
            out += pending_gce + raw
            pending_gce = b""
        elif kind == "plaintext":
            pending_gce = b""
        elif kind == "app" and detail in KEEP_APPLICATIONS:
            out += raw
        elif kind == "trailer":
            out += raw
            saw_trailer = True
    assert saw_trailer  # _blocks always ends with one or raises
    return bytes(out)
