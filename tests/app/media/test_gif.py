"""GIF inspection and metadata stripping: frames must come out pixel-identical."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from app.media.gif import GifError, decode_frames, inspect_gif, sanitize_gif
from tests.factories import gif_bytes


def _app_ext(identifier: bytes, payload: bytes) -> bytes:
    body = b"".join(bytes([len(payload[i : i + 255])]) + payload[i : i + 255] for i in range(0, len(payload), 255))
    return b"\x21\xff\x0b" + identifier + body + b"\x00"


def _comment(text: bytes) -> bytes:
    return b"\x21\xfe" + bytes([len(text)]) + text + b"\x00"


def _plain_text(text: bytes) -> bytes:
    # label 0x01, a 12-byte header block, then the text sub-block
    return b"\x21\x01\x0c" + bytes(12) + bytes([len(text)]) + text + b"\x00"


def _gce(delay_cs: int) -> bytes:
    return b"\x21\xf9\x04\x00" + struct.pack("<H", delay_cs) + b"\x00\x00"


def _header_len(data: bytes) -> int:
    packed = data[10]
    return 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)


def tagged_gif() -> bytes:
    """An animated GIF carrying the kinds of metadata that could name a model."""
    buf = io.BytesIO()
    frames = [Image.new("RGB", (24, 16), (i * 60, 255 - i * 60, 90)) for i in range(4)]
    for i, im in enumerate(frames):
        im.putpixel((i, i), (255, 255, 255))
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=125, loop=0,
                   comment=b"made by animatediff-lightning-4step")
    data = buf.getvalue()
    h = _header_len(data)
    xmp = _app_ext(b"XMP DataXMP", b'<x:xmpmeta><rdf:Description tool="AnimateDiff 25 steps"/></x:xmpmeta>')
    extra = _app_ext(b"ANIMDIFF1.0", b"model=lightning")
    # a plain-text block with its own GCE (delay 99 cs) right before the trailer
    tail = _gce(99) + _plain_text(b"lightning") + _comment(b"seed 42")
    assert data.endswith(b"\x3b")
    return data[:h] + xmp + extra + data[h:-1] + tail + b"\x3b" + b"trailing junk: lightning"


def test_inspect_reports_frames_size_fps_and_loop():
    info = inspect_gif(gif_bytes(frames=6, size=(40, 30), fps=10))
    assert (info.frames, info.width, info.height, info.loop) == (6, 40, 30, 0)
    assert info.animated and not info.mixed_durations
    assert info.fps == 10
    assert info.describe() == "6 frames, 40x30, 10 fps"


def test_inspect_reports_mixed_durations():
    buf = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), (i * 80, 0, 0)) for i in range(3)]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=[100, 100, 300])
    info = inspect_gif(buf.getvalue())
    assert info.mixed_durations
    assert info.fps == pytest.approx(3000 / 500)
    assert info.loop is None  # no NETSCAPE block: plays once


def test_inspect_refuses_non_gifs_and_truncated_files():
    with pytest.raises(GifError, match="not a GIF"):
        inspect_gif(b"\x89PNG\r\n\x1a\n....")
    data = gif_bytes(frames=5)
    with pytest.raises(GifError):
        inspect_gif(data[: len(data) // 2])
    with pytest.raises(GifError):
        sanitize_gif(data[: len(data) // 2])


def test_still_gif_is_not_animated():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    assert not inspect_gif(buf.getvalue()).animated


def test_sanitize_strips_metadata_and_keeps_frames_identical():
    data = tagged_gif()
    before = inspect_gif(data)
    assert "comment" in before.extensions and "app:XMP DataXMP" in before.extensions
    assert b"lightning" in data and b"AnimateDiff" in data

    clean = sanitize_gif(data)
    after = inspect_gif(clean)
    assert after.extensions == ("app:NETSCAPE2.0",)
    for word in (b"lightning", b"AnimateDiff", b"seed 42", b"XMP", b"junk"):
        assert word not in clean
    assert (after.frames, after.width, after.height, after.loop) == (before.frames, before.width, before.height, 0)
    assert after.durations_ms == (120, 120, 120, 120)
    assert [f.tobytes() for f in decode_frames(clean)] == [f.tobytes() for f in decode_frames(data)]
    assert sanitize_gif(clean) == clean  # idempotent


def test_sanitize_keeps_local_colour_tables_and_missing_trailer():
    # Pillow writes a local colour table per frame when palettes differ; drop the trailer too.
    frames = [Image.new("RGB", (10, 10), c).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
              for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = buf.getvalue()[:-1]
    clean = sanitize_gif(data)
    assert clean.endswith(b"\x3b")
    assert [f.tobytes() for f in decode_frames(clean)] == [f.tobytes() for f in decode_frames(data)]


def test_joined_parts_play_every_frame_in_order_with_its_colours_and_timing():
    # Each part has its own global colour table (red squares, then blue): a later part's frames must carry
    # theirs as a local table, or they would play in the first part's colours.
    from app.media.gif import join_gifs

    red = gif_bytes(frames=3, colour=(220, 30, 30), fps=10)
    blue = gif_bytes(frames=2, colour=(30, 30, 220), fps=5)
    joined = join_gifs([red, sanitize_gif(blue) + b"\x00junk after the trailer"])
    expected = [f.tobytes() for f in decode_frames(red) + decode_frames(blue)]
    assert [f.tobytes() for f in decode_frames(joined)] == expected
    info = inspect_gif(joined)
    assert (info.frames, info.durations_ms, info.loop) == (5, (100, 100, 100, 200, 200), 0)
    assert info.extensions == ("app:NETSCAPE2.0",)  # the loop once, from the first part


def test_parts_of_different_sizes_are_refused():
    from app.media.gif import join_gifs

    with pytest.raises(GifError, match="one screen size"):
        join_gifs([gif_bytes(size=(32, 32)), gif_bytes(size=(48, 32))])
    with pytest.raises(GifError, match="nothing to join"):
        join_gifs([])
