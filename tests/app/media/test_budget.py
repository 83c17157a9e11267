"""The pixel budget is read from the headers alone: it agrees with a decoder and refuses bombs undecoded."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from app.media.budget import (
    GifBudgetError,
    GifLimits,
    UnsafeFileError,
    check_gif_budget,
    read_gif_header,
    read_untrusted_file,
)
from tests.factories import gif_bytes
from tests.support.bombs import gif_bomb

LIMITS = GifLimits(max_side=1024, max_frames=100, max_pixels=1_000_000)


def test_the_header_walk_counts_what_pillow_decodes():
    data = gif_bytes(frames=7, size=(40, 24))
    header = read_gif_header(data)
    with Image.open(io.BytesIO(data)) as im:
        assert (header.width, header.height, header.frames) == (*im.size, im.n_frames)
    assert header.pixels == 40 * 24 * 7
    assert check_gif_budget(data, LIMITS) == header


def test_a_frame_larger_than_the_screen_counts_at_its_extent():
    # Decoders grow the canvas to fit a frame that extends past the logical screen.
    data = bytearray(gif_bomb(width=8, height=8, frames=1))
    frame = data.index(b"\x2c")
    data[frame + 5:frame + 9] = (3000).to_bytes(2, "little") + (2).to_bytes(2, "little")  # a 3000x2 frame
    header = read_gif_header(bytes(data))
    assert (header.canvas_width, header.canvas_height) == (3000, 8)
    with pytest.raises(GifBudgetError, match="BLINDPAIR_GIF_MAX_SIDE"):
        check_gif_budget(bytes(data), LIMITS)


@pytest.mark.parametrize(("bomb", "setting"), [
    (gif_bomb(4096, 4096, 2), "BLINDPAIR_GIF_MAX_SIDE"),  # 85 bytes, 33.5 million pixels
    (gif_bomb(64, 64, 5000), "BLINDPAIR_GIF_MAX_FRAMES"),
    (gif_bomb(1000, 1000, 50), "BLINDPAIR_GIF_MAX_PIXELS"),  # 50 million pixels in 1.3 KB
])
def test_bombs_are_refused_with_the_limit_named(bomb, setting):
    assert len(bomb) < 120_000
    with pytest.raises(GifBudgetError, match=setting):
        check_gif_budget(bomb, LIMITS)


def test_defaults_refuse_the_reported_bombs():
    limits = GifLimits.from_settings()
    for bomb in (gif_bomb(4096, 4096, 2), gif_bomb(512, 512, 300), gif_bomb(256, 256, 2000)):
        with pytest.raises(GifBudgetError):
            check_gif_budget(bomb, limits)
    check_gif_budget(gif_bytes(frames=16, size=(512, 512)), limits)  # an ordinary clip passes


@pytest.mark.parametrize("data", [b"", b"PNG....", b"GIF89a\x01\x00", gif_bytes()[:-30], b"GIF89a" + bytes(7) + b"!"])
def test_damaged_files_are_refused_not_crashed_on(data):
    with pytest.raises(GifBudgetError):
        check_gif_budget(data, LIMITS)


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.gif"
    os.mkfifo(fifo)  # opening this for reading without O_NONBLOCK waits for a writer forever
    with pytest.raises(UnsafeFileError, match="FIFO"):
        read_untrusted_file(fifo, max_bytes=1000)
    with pytest.raises(UnsafeFileError, match="folder"):
        read_untrusted_file(tmp_path, max_bytes=1000)
    with pytest.raises(UnsafeFileError, match="device"):
        read_untrusted_file(Path("/dev/zero"), max_bytes=1000)


def test_size_and_folder_limits(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    big = root / "big.gif"
    big.write_bytes(bytes(2000))
    with pytest.raises(UnsafeFileError, match="2000 bytes is over the 1000-byte limit"):
        read_untrusted_file(big, max_bytes=1000)
    outside = tmp_path / "outside.gif"
    outside.write_bytes(b"GIF89a")
    link = root / "link.gif"
    link.symlink_to(outside)
    with pytest.raises(UnsafeFileError, match="outside"):
        read_untrusted_file(link, max_bytes=1000, root=root)
    assert read_untrusted_file(big, max_bytes=5000) == bytes(2000)
