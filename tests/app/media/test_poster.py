"""The first-frame poster: lossless, and grown to any length from MIN_GROWTH on without changing a pixel or the
chunk layout (app/media/poster.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.media import poster
from tests.factories import video_frames


def _chunks(data: bytes) -> list[bytes]:
    out, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        out.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return out


@pytest.mark.parametrize("palette", [True, False])
def test_grown_posters_show_the_same_pixels_in_the_same_layout(palette):
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    if palette:
        frame = frame // 64 * 64  # at most 64 colours, as in a GIF frame
    plain = poster.png(frame, palette=palette)
    layout = [b"IHDR", b"PLTE", b"IDAT", b"IEND"] if palette else [b"IHDR", b"IDAT", b"IEND"]
    assert _chunks(plain) == layout
    for growth in [0, *range(poster.MIN_GROWTH, poster.MIN_GROWTH + 12), 997]:
        grown = poster.pad_png(plain, len(plain) + growth)
        assert len(grown) == len(plain) + growth and _chunks(grown) == layout
        with Image.open(io.BytesIO(grown)) as im:
            im.load()  # a bad CRC or deflate stream raises here
            assert (np.asarray(im.convert("RGB")) == frame).all()
    with pytest.raises(ValueError, match="at least"):
        poster.pad_png(plain, len(plain) + poster.MIN_GROWTH - 1)
    with pytest.raises(ValueError, match="shrink"):
        poster.pad_png(plain, len(plain) - 1)


def test_a_videos_poster_is_its_first_decoded_frame():
    from app.media import video

    frames = video_frames(frames=4, size=(64, 48))
    data = video.encode(frames, 8, "mp4")
    first = poster.first_frame(data, "mp4")
    assert first.shape == (48, 64, 3)
    assert (first == video.decode(data).frames[0]).all()  # the same decoder's frame 0, not a resampled still
    with pytest.raises(poster.PosterError, match="cannot be decoded"):
        poster.first_frame(b"\x00" * 100, "mp4")
