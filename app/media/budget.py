"""A pixel budget for untrusted GIFs, checked from the headers before a single frame is decoded.

Decoding a GIF costs memory and time in proportion to its canvas times its frames, not to its file size: the
logical screen descriptor may claim 4096x4096 in 7 bytes, and each frame costs 10 bytes plus a few bytes of
LZW data, so an 85-byte file decoded to 1.4 GB and a 46 KB file of 2000 frames took minutes. This module
walks the block structure only (GIF89a spec, https://www.w3.org/Graphics/GIF/spec-gif89a.txt, sections
17-27: the logical screen descriptor, then each image descriptor, skipping every LZW data sub-block unread)
and refuses a file whose canvas side, frame count or width x height x frames is over the limits, so a
decoder is only ever handed work of a known bound: about 4 bytes per budget pixel when every frame is kept
as RGBA, one canvas at a time when frames are streamed.

``read_untrusted_file`` is the other half: an import must never open a FIFO, a device or a socket (a FIFO
named ``x.gif`` blocked ``read_bytes()`` forever), so the file is opened without blocking and refused unless
it is a regular file of bounded size.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings, get_settings
from app.media.gif import colour_table_size, sub_blocks_end


class GifBudgetError(ValueError):
    """An untrusted GIF refused before decoding; the message names the limit and the setting that sets it."""


class UnsafeFileError(ValueError):
    """Not a regular file (a FIFO, device, socket or folder), a link leaving its folder, or too large."""


@dataclass(frozen=True)
class GifLimits:
    max_side: int
    max_frames: int
    max_pixels: int  # canvas width x canvas height x frames

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> GifLimits:
        s = settings or get_settings()
        return cls(max_side=s.gif_max_side, max_frames=s.gif_max_frames, max_pixels=s.gif_max_pixels)


@dataclass(frozen=True)
class GifHeader:
    """What the headers claim: the canvas a decoder allocates and how many frames it decodes."""

    width: int  # logical screen
    height: int
    frames: int  # image descriptors
    canvas_width: int  # the screen grown to every frame's extent (decoders enlarge the canvas to fit)
    canvas_height: int

    @property
    def pixels(self) -> int:
        return self.canvas_width * self.canvas_height * max(self.frames, 1)

    def describe(self) -> str:
        return f"{self.canvas_width}x{self.canvas_height} x {self.frames} frame(s)"


def _sub_blocks_end(data: bytes, pos: int) -> int:
    """The offset after a run of data sub-blocks, their data unread (``app.media.gif.sub_blocks_end``)."""
    end = sub_blocks_end(data, pos)
    if end is None:
        raise GifBudgetError("the GIF is truncated inside a data block")
    return end


def read_gif_header(data: bytes, *, max_frames: int | None = None) -> GifHeader:
    """Walk the blocks of ``data`` without decoding any image data.

    ``max_frames``: stop counting (and refuse) as soon as this many frames are exceeded, so the walk of a file
    with millions of tiny frames stays short too.
    """
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise GifBudgetError("not a GIF file (it does not start with GIF87a/GIF89a)")
    width = int.from_bytes(data[6:8], "little")
    height = int.from_bytes(data[8:10], "little")
    packed = data[10]
    pos = 13 + colour_table_size(packed)
    canvas_w, canvas_h, frames = width, height, 0
    n = len(data)
    while pos < n:  # a file without a trailer ends after its last block; decoders accept that
        introducer = data[pos]
        if introducer == 0x3B:  # trailer: decoders stop here, so anything after it costs nothing
            break
        if introducer == 0x2C:  # image descriptor: left, top, width, height (little-endian), packed
            if pos + 10 > n:
                raise GifBudgetError("the GIF is truncated inside an image descriptor")
            left, top, w, h = (int.from_bytes(data[pos + i:pos + i + 2], "little") for i in (1, 3, 5, 7))
            local = data[pos + 9]
            canvas_w, canvas_h = max(canvas_w, left + w), max(canvas_h, top + h)
            frames += 1
            if max_frames is not None and frames > max_frames:
                break
            pos += 10 + colour_table_size(local) + 1  # + the LZW minimum code size
            pos = _sub_blocks_end(data, pos)
        elif introducer == 0x21:  # extension: label, then sub-blocks
            pos = _sub_blocks_end(data, pos + 2)
        else:
            raise GifBudgetError(f"unexpected byte {introducer:#04x} at offset {pos}: the GIF is damaged")
    return GifHeader(width, height, frames, canvas_w, canvas_h)


def check_gif_budget(data: bytes, limits: GifLimits | None = None) -> GifHeader:
    """The header of ``data`` if decoding it stays within ``limits`` (default: the settings); else GifBudgetError."""
    limits = limits or GifLimits.from_settings()
    header = read_gif_header(data, max_frames=limits.max_frames)
    side = max(header.canvas_width, header.canvas_height)
    if side > limits.max_side:
        raise GifBudgetError(
            f"its canvas is {header.canvas_width}x{header.canvas_height} pixels, over the {limits.max_side}-pixel "
            "limit per side (BLINDPAIR_GIF_MAX_SIDE); it was refused before decoding. Export the clip smaller")
    if header.frames > limits.max_frames:
        raise GifBudgetError(
            f"it has more than {limits.max_frames} frames, the limit (BLINDPAIR_GIF_MAX_FRAMES); it was refused "
            "before decoding. Export a shorter clip")
    if header.pixels > limits.max_pixels:
        raise GifBudgetError(
            f"{header.describe()} is {header.pixels:,} pixels to decode, over the budget of {limits.max_pixels:,} "
            "(width x height x frames, BLINDPAIR_GIF_MAX_PIXELS); it was refused before decoding. Export fewer "
            "or smaller frames")
    return header


def read_untrusted_file(path: Path, *, max_bytes: int, root: Path | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else raises UnsafeFileError, never blocks.

    ``root``: the folder the file must stay inside once links are resolved. The file is opened with
    O_NONBLOCK (opening a FIFO for reading would otherwise wait for a writer forever) and checked with fstat
    on the open descriptor, so a file swapped for a FIFO between a check and the open is refused as well.
    """
    path = Path(path)
    if root is not None and not path.resolve().is_relative_to(Path(root).resolve()):
        raise UnsafeFileError(f"a link to a file outside {root}; copy the file in instead")
    try:
        before = os.lstat(path)
    except OSError as exc:
        raise UnsafeFileError(f"cannot be read ({exc.strerror})") from exc
    if not (stat.S_ISREG(before.st_mode) or stat.S_ISLNK(before.st_mode)):
        raise UnsafeFileError(f"is {_kind(before.st_mode)}, not a regular file; only plain files are read")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UnsafeFileError(f"cannot be opened ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"is {_kind(st.st_mode)}, not a regular file; only plain files are read")
        if st.st_size > max_bytes:
            raise UnsafeFileError(f"{st.st_size} bytes is over the {max_bytes}-byte limit "
                                  "(BLINDPAIR_MAX_UPLOAD_BYTES)")
        chunks: list[bytes] = []
        total = 0
        while True:  # read at most max_bytes + 1: a file growing while it is read is still bounded
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise UnsafeFileError(f"more than {max_bytes} bytes, over the limit (BLINDPAIR_MAX_UPLOAD_BYTES)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
