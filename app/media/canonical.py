"""One GIF writer for every served clip, so that the bytes tell no more than the pixels do.

A GIF's bytes carry choices the pixels do not show: which encoder wrote it (block layout, global or local
colour tables, unused palette entries, extensions, disposal), how hard it compressed (gifsicle's lossy level,
LZW code sizes) and so its size. Any of them can name the model that made a clip, or say which side of a pair
is an attention-check copy. So every clip, imported, generated or copied for a check, is decoded to the
pixels a browser shows and written again here, in one fixed layout:

- ``GIF89a``, the canvas size, no global colour table, background 0, aspect 0;
- one NETSCAPE2.0 block, looping forever;
- per frame: a graphic control block (disposal 1 "leave in place", no transparency, the frame's delay, with
  one-centisecond jitter evened out by one rule), a full-canvas image descriptor, a local colour table of
  256 entries (the frame's colours in a keyed pseudo-random order, unused entries zero), LZW minimum code
  size 8, data sub-blocks of 255 bytes with a shorter last one;
- the trailer.

Each frame's colour order is a pseudo-random permutation keyed with the install's secret, the clip's pixels
and a role (``"clip"``, or ``"duplicate"`` for the "same clip twice" copy), advancing from frame to frame: a
clip and its copy, or the repeated frames of a frozen copy, differ in their bytes the way any two clips do,
while the same frames written twice give the same bytes (a generated clip is reproducible). Without the
secret an order cannot be told from a uniformly random one, so it carries nothing about the model.

Sizes are equalised inside the image data (``pad_frames``): a frame's LZW stream grows by clear codes
placed before it, which the GIF spec allows at any point (GIF89a section 22 and appendix F,
https://www.w3.org/Graphics/GIF/spec-gif89a.txt) and every decoder follows, since a clear only resets the
code table. So every frame of every clip of a prompt is served at one length without any separable block.
What a parser can still read (how many clears lead a frame, so how long the frame's own LZW stream is) is a
function of the frame's pixels, as anyone holding the decoded frames can compute; ``canonical_lengths``
is that function.

Why not Pillow's writer: it merges identical consecutive frames, crops frames to the changed box, chooses
between global and local tables and rewrites palettes on its own, and cannot reach a byte count. Its C LZW
coder is used directly (``Image.tobytes("gif", ...)``, 50x faster than LZW in Python); the block structure
around it is written here.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from app.config import get_settings
from app.media.gif import GifError

MIN_CODE_SIZE = 8
PALETTE_ENTRIES = 256
_CLEAR_BITS = 9  # a clear code right after a clear is read at MIN_CODE_SIZE + 1 bits
_HEADER_PACKED = 0x70  # no global colour table, 8-bit colour resolution
_LOOP = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
_GCE_PACKED = 0x04  # disposal 1 (leave in place), no user input, no transparency
_DESCRIPTOR_PACKED = 0x87  # local colour table, not interlaced, not sorted, 256 entries
_FRAME_HEAD = 8 + 10 + 3 * PALETTE_ENTRIES + 1  # graphic control + descriptor + local table + LZW code size


class CanonicalGifError(GifError):
    """The clip cannot be written in the canonical layout without changing a pixel; the message says why."""


@dataclass(frozen=True)
class Video:
    """What a viewer sees: every frame composited to RGB (uint8, H x W x 3), and each frame's delay."""

    frames: tuple[np.ndarray, ...]
    durations_ms: tuple[int, ...]

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


def decode_video(data: bytes) -> Video:
    """Every frame as a browser composites it (Pillow applies disposal and transparency while seeking).

    A frame with transparent pixels is refused: it would show the page behind it, and one opaque layout for
    every clip is what makes two clips' bytes comparable.
    """
    frames: list[np.ndarray] = []
    durations: list[int] = []
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "GIF":
                raise CanonicalGifError(f"not a GIF file (Pillow reads it as {im.format})")
            for number, frame in enumerate(ImageSequence.Iterator(im), start=1):
                rgba = np.asarray(frame.convert("RGBA"))
                if int(rgba[..., 3].min()) < 255:
                    raise CanonicalGifError(
                        f"frame {number} has transparent pixels; clips are served opaque, so flatten the frames "
                        "onto a background colour and export the GIF again")
                frames.append(np.ascontiguousarray(rgba[..., :3]))
                durations.append(int(frame.info.get("duration", 0) or 0))
    except GifError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CanonicalGifError(f"cannot be decoded as a GIF ({exc})") from exc
    if not frames:
        raise CanonicalGifError("the GIF has no frames")
    return Video(tuple(frames), tuple(durations))


def encode(frames: Sequence[np.ndarray], durations_ms: Sequence[int], *, shuffle: bool = True,
           role: str = "clip") -> bytes:
    """Write RGB frames in the canonical layout, each frame's LZW stream as short as the coder makes it.

    ``shuffle`` orders each frame's colours by the keyed permutation (what every stored clip gets; ``role``
    tells a copy from its clip); ``False`` sorts them by value, a plain form for comparisons. A frame with
    more than 256 colours cannot be a GIF frame without changing pixels, and is refused.
    """
    if not frames or len(frames) != len(durations_ms):
        raise CanonicalGifError("need at least one frame and one delay per frame")
    order_rng = _order_rng(frames, durations_ms, role) if shuffle else None
    delays = _delays_cs(durations_ms)
    h, w = frames[0].shape[:2]
    if not (0 < w < 65536 and 0 < h < 65536):
        raise CanonicalGifError(f"a GIF cannot be {w}x{h}")
    out = bytearray(b"GIF89a" + _u16(w) + _u16(h) + bytes([_HEADER_PACKED, 0, 0]) + _LOOP)
    for number, (frame, delay) in enumerate(zip(frames, delays, strict=True), start=1):
        if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
            raise CanonicalGifError(f"frame {number} is {frame.shape} {frame.dtype}, expected ({h}, {w}, 3) uint8")
        palette, indices = _palette_and_indices(frame, number, order_rng)
        out += _frame_head(w, h, delay, palette)
        out += _sub_blocks(_lzw(indices, w, h))
    out += b"\x3b"
    return bytes(out)


def canonicalize(data: bytes, *, shuffle: bool = True, role: str = "clip") -> bytes:
    """``data`` decoded and written again in the canonical layout: the same pixels and delays, nothing else."""
    video = decode_video(data)
    return encode(video.frames, video.durations_ms, shuffle=shuffle, role=role)


def canonical_lengths(data: bytes) -> tuple[int, ...]:
    """The length of each frame's shortest LZW stream: what ``encode`` writes for these pixels.

    A function of the decoded pixels alone (the colour order does not change LZW's output length), so a
    reader of the bytes learns from it nothing the frames do not show.
    """
    return frame_data_lengths(canonicalize(data, shuffle=False))


def same_video(a: bytes, b: bytes) -> bool:
    """Whether two GIFs show the same frames with the same delays (as written here), whatever their bytes."""
    va, vb = decode_video(a), decode_video(b)
    same_timing = _delays_cs(va.durations_ms) == _delays_cs(vb.durations_ms)
    return same_timing and len(va.frames) == len(vb.frames) and all(
        np.array_equal(x, y) for x, y in zip(va.frames, vb.frames, strict=True))


# --- reading and growing canonical files ------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    head: bytes  # graphic control block, descriptor, local table, LZW minimum code size
    stream: bytes  # the LZW bit stream, sub-block length bytes removed


def _parse(data: bytes) -> tuple[bytes, list[_Frame]]:
    """The screen header (+ looping block) and the frames of a canonical file; ``CanonicalGifError`` otherwise."""
    start = 13 + len(_LOOP)
    if len(data) < start + 1 or data[:6] != b"GIF89a" or data[10:13] != bytes([_HEADER_PACKED, 0, 0]) \
            or data[13:start] != _LOOP:
        raise CanonicalGifError("not a canonical GIF (screen header or looping block differ)")
    w, h = data[6:8], data[8:10]
    frames: list[_Frame] = []
    pos = start
    while data[pos] != 0x3B:
        head = data[pos:pos + _FRAME_HEAD]
        if len(head) < _FRAME_HEAD or head[:4] != bytes([0x21, 0xF9, 0x04, _GCE_PACKED]) or head[6:9] != b"\0\0\x2c" \
                or head[9:13] != b"\0\0\0\0" or head[13:15] != w or head[15:17] != h \
                or head[17] != _DESCRIPTOR_PACKED or head[-1] != MIN_CODE_SIZE:
            raise CanonicalGifError(f"not a canonical GIF (frame {len(frames) + 1} is laid out differently)")
        pos += _FRAME_HEAD
        chunks = []
        while True:
            if pos >= len(data):
                raise CanonicalGifError("the GIF is truncated")
            size = data[pos]
            if size == 0:
                pos += 1
                break
            chunks.append(data[pos + 1:pos + 1 + size])
            pos += 1 + size
        frames.append(_Frame(head, b"".join(chunks)))
        if pos >= len(data):
            raise CanonicalGifError("the GIF is truncated (no trailer)")
    if pos != len(data) - 1 or not frames:
        raise CanonicalGifError("not a canonical GIF (bytes after the trailer, or no frame)")
    return data[:start], frames


def is_canonical(data: bytes) -> bool:
    """Whether ``data`` has the canonical layout (as written by ``encode``, possibly grown by ``pad_frames``)."""
    try:
        _parse(data)
    except CanonicalGifError:
        return False
    return True


def frame_data_lengths(data: bytes) -> tuple[int, ...]:
    """The LZW stream length, in bytes, of every frame of a canonical file."""
    return tuple(len(f.stream) for f in _parse(data)[1])


def pad_frames(data: bytes, targets: Sequence[int]) -> bytes:
    """The canonical file ``data`` with frame ``i``'s LZW stream grown to exactly ``targets[i]`` bytes.

    Every frame gets the same layout as before (255-byte sub-blocks, a shorter last one), so a file's size is
    a function of ``targets`` alone. The pixels do not change: clear codes decode to nothing.
    """
    header, frames = _parse(data)
    if len(targets) != len(frames):
        raise CanonicalGifError(f"{len(targets)} target lengths for {len(frames)} frames")
    out = bytearray(header)
    for number, (frame, target) in enumerate(zip(frames, targets, strict=True), start=1):
        if target < len(frame.stream):
            raise CanonicalGifError(f"frame {number} needs {len(frame.stream)} bytes, more than the {target} asked")
        out += frame.head + _sub_blocks(_grow(frame.stream, target))
    out += b"\x3b"
    return bytes(out)


def join(parts: Sequence[bytes]) -> bytes:
    """One canonical file playing the frames of the canonical ``parts`` in order (all of one canvas size).

    Every canonical frame is a full, opaque canvas with its own colour table, so no frame depends on a frame
    of another part; the worker encodes a clip in parts, one per core (worker/gif.py).
    """
    if not parts:
        raise CanonicalGifError("nothing to join")
    header = _parse(parts[0])[0]
    out = bytearray(header)
    for part in parts:
        part_header, frames = _parse(part)
        if part_header != header:
            raise CanonicalGifError("the parts of a GIF must share one canvas size")
        for frame in frames:
            out += frame.head + _sub_blocks(frame.stream)
    out += b"\x3b"
    return bytes(out)


def split(data: bytes, n_parts: int) -> list[bytes]:
    """The canonical file ``data`` as up to ``n_parts`` canonical files of consecutive frames (``join`` undoes it).

    The worker keeps each clip's uncompressed master and compresses it again per pair (worker/pair_encoding.py),
    one part per core as when it was first encoded.
    """
    header, frames = _parse(data)
    n = max(1, min(n_parts, len(frames)))
    bounds = [round(i * len(frames) / n) for i in range(n + 1)]
    return [header + b"".join(f.head + _sub_blocks(f.stream) for f in frames[lo:hi]) + b"\x3b"
            for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]


def equal_targets(lengths: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per frame, the longest stream among clips shown side by side: the length every one of them is served at.

    Clips of a study share a frame count (the import checks it); a clip with fewer frames than another leaves
    the later frames' targets to the clips that have them.
    """
    n = max((len(x) for x in lengths), default=0)
    return tuple(max(x[i] for x in lengths if len(x) > i) for i in range(n))


def served_size(targets: Sequence[int]) -> int:
    """The byte count of a canonical file whose frames are grown to ``targets``: nothing else enters it."""
    return 13 + len(_LOOP) + sum(_FRAME_HEAD + t + -(-t // 255) + 1 for t in targets) + 1


# --- the pieces -----------------------------------------------------------------------------------------


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def _delays_cs(durations_ms: Sequence[int]) -> list[int]:
    """Frame delays in centiseconds; delays that differ by at most one centisecond are evened out.

    Exporters reach a rate that is not a whole number of centiseconds with their own patterns (8 fps as
    12, 13, 12, 13 or as 13, 12, 12, 13 ...), a mark of the tool that made the clip and nothing a viewer can
    see. Such delays are spread evenly over the frames by one rule, keeping their sum, so clips of one rate
    get one pattern. Delays further apart (a held frame) are the clip's timing, and are kept.
    """
    delays = [min(65535, max(0, round(d / 10))) for d in durations_ms]
    if max(delays) - min(delays) != 1:
        return delays
    n, total = len(delays), sum(delays)
    base, extra = divmod(total, n)
    return [base + (i + 1) * extra // n - i * extra // n for i in range(n)]


def _frame_head(w: int, h: int, delay_cs: int, palette: bytes) -> bytes:
    gce = bytes([0x21, 0xF9, 0x04, _GCE_PACKED]) + _u16(delay_cs) + b"\0\0"
    descriptor = b"\x2c" + _u16(0) + _u16(0) + _u16(w) + _u16(h) + bytes([_DESCRIPTOR_PACKED])
    return gce + descriptor + palette + bytes([MIN_CODE_SIZE])


def _order_rng(frames: Sequence[np.ndarray], durations_ms: Sequence[int], role: str) -> random.Random:
    """The generator of a file's colour orders: keyed with the secret, the pixels, the delays and ``role``."""
    content = hashlib.sha256(repr((len(frames), frames[0].shape, tuple(durations_ms))).encode())
    for frame in frames:
        content.update(np.ascontiguousarray(frame).data)
    key = get_settings().secret_key.encode()
    seed = hmac.new(key, b"blindpair-colour-order:" + role.encode() + b":" + content.digest(), hashlib.sha256)
    return random.Random(seed.digest())


def _palette_and_indices(frame: np.ndarray, number: int, order_rng: random.Random | None) -> tuple[bytes, np.ndarray]:
    counted = Image.fromarray(frame, "RGB").getcolors(PALETTE_ENTRIES)  # None when there are more
    if counted is None:
        raise CanonicalGifError(
            f"frame {number} shows more than {PALETTE_ENTRIES} colours, more than a GIF frame can hold (it was "
            "built from several colour tables); export the GIF with one full frame per image")
    colours = sorted(_packed(colour) for _count, colour in counted)
    if order_rng is not None:
        order_rng.shuffle(colours)
    table = np.array(colours, dtype=np.uint32)
    # A 2^24-entry lookup from packed RGB to palette index; only the entries of this frame's colours are
    # written or read, so np.empty's uninitialised memory is never used.
    lookup = np.empty(1 << 24, dtype=np.uint8)
    lookup[table] = np.arange(len(table), dtype=np.uint8)
    packed = (frame[..., 0].astype(np.uint32) << 16) | (frame[..., 1].astype(np.uint32) << 8) | frame[..., 2]
    palette = np.zeros((PALETTE_ENTRIES, 3), dtype=np.uint8)
    palette[: len(table)] = np.stack([table >> 16, (table >> 8) & 0xFF, table & 0xFF], axis=1)
    return palette.tobytes(), lookup[packed]


def _packed(colour: object) -> int:
    """An RGB triple from ``Image.getcolors`` as one 24-bit number."""
    if not isinstance(colour, tuple):  # an RGB image's colours are triples; Pillow's types allow floats too
        raise TypeError(f"expected an RGB triple, got {colour!r}")
    r, g, b = colour
    return (int(r) << 16) | (int(g) << 8) | int(b)


def _lzw(indices: np.ndarray, w: int, h: int) -> bytes:
    """The frame's LZW stream (min code size 8), without sub-block framing; it starts with a clear code."""
    image = Image.frombytes("P", (w, h), np.ascontiguousarray(indices).tobytes())
    blocks = image.tobytes("gif", "P", MIN_CODE_SIZE, 0)  # Pillow's coder writes 255-byte sub-blocks
    stream = bytearray()
    pos = 0
    while pos < len(blocks):
        size = blocks[pos]
        stream += blocks[pos + 1:pos + 1 + size]
        pos += 1 + size
    if len(stream) < 2 or stream[0] != 0 or not stream[1] & 1:
        # Padding prepends clear codes at 9 bits, which is only right if the stream starts at the
        # code size a clear sets; Pillow's coder has always begun with one (GifEncode.c).
        raise RuntimeError("Pillow's GIF coder no longer starts its stream with a clear code")
    return bytes(stream)


def _grow(stream: bytes, target: int) -> bytes:
    """``stream`` preceded by clear codes (9 bits each) and, if the count falls one byte short, a zero byte
    after its end code, to exactly ``target`` bytes."""
    extra = target - len(stream)
    if extra <= 0:
        return stream
    n = 8 * extra // _CLEAR_BITS  # the most clears that fit: ceil(9n / 8) <= extra, and >= extra - 1
    shift = _CLEAR_BITS * n
    clears = (1 << MIN_CODE_SIZE) * (((1 << shift) - 1) // ((1 << _CLEAR_BITS) - 1))  # n times 256, 9 bits apart
    value = (int.from_bytes(stream, "little") << shift) | clears
    return value.to_bytes(target, "little")


def _sub_blocks(stream: bytes) -> bytes:
    view = memoryview(stream)
    parts = [bytes([len(view[i:i + 255])]) + view[i:i + 255] for i in range(0, len(view), 255)]
    return b"".join(parts) + b"\0"
