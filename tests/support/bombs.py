"""Crafted hostile GIFs: a few bytes that claim a huge canvas or thousands of frames (decompression bombs)."""

from __future__ import annotations

import struct

NETSCAPE_LOOP = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
# A 1x1 frame: LZW minimum code size 2, then one sub-block (clear, index 0, end) and the terminator.
_TINY_FRAME = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"


def _gce(delay_cs: int = 10) -> bytes:
    return b"\x21\xf9\x04\x04" + struct.pack("<H", delay_cs) + b"\x00\x00"


def gif_bomb(width: int = 4096, height: int = 4096, frames: int = 2) -> bytes:
    """A valid animated GIF of ``frames`` 1x1 frames on a ``width`` x ``height`` canvas.

    Every frame costs about 20 bytes, yet a decoder composites each onto a full canvas: the 4096x4096 default
    is under 100 bytes and decodes to 16.7 million pixels per frame.
    """
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    return header + NETSCAPE_LOOP + (_gce() + _TINY_FRAME) * frames + b"\x3b"
