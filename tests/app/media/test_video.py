"""MP4/WebM clips: the budget read from the container headers, decoding, the canonical encoder, padding."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from app.config import get_settings
from app.media import video
from tests.factories import video_bytes, video_frames


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_headers_give_size_frames_and_duration_without_decoding(fmt):
    data = video_bytes(fmt, frames=12, size=(48, 32), fps=8)
    header = video.read_video_header(data)
    assert (header.width, header.height, header.frames) == (48, 32, 12)
    assert header.duration_s == pytest.approx(1.5, abs=0.01)
    assert header.codec == ("avc1" if fmt == "mp4" else "V_VP9")


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_decode_is_faithful_at_the_fixed_quality(fmt):
    frames = video_frames(12, (64, 64))
    decoded = video.decode(video.encode(frames, 8, fmt))
    assert len(decoded.frames) == 12 and decoded.fps == 8 and decoded.size == (64, 64)
    # High fixed quality: the mean error stays far below anything a rater could see on flat content.
    err = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, decoded.frames, strict=True)])
    assert err < 2.0


def _mp4_with_size(data: bytes, w: int, h: int) -> bytes:
    """The MP4 with its sample entry claiming another size (what a decompression bomb would do)."""
    # the sample entry: 6 reserved + 2 index + 16 predefined/reserved bytes, then width and height
    pos = data.index(b"avc1", data.index(b"stsd")) + 4 + 24
    return data[:pos] + struct.pack(">HH", w, h) + data[pos + 4:]


def test_a_huge_claimed_canvas_is_refused_before_decoding(monkeypatch):
    data = _mp4_with_size(video_bytes("mp4"), 30000, 30000)
    with pytest.raises(video.VideoBudgetError, match="BLINDPAIR_GIF_MAX_SIDE"):
        video.check_video_budget(data)
    # and decode never reaches FFmpeg for it
    import av
    monkeypatch.setattr(av, "open", lambda *a, **k: pytest.fail("decoded despite the budget"))
    with pytest.raises(video.VideoBudgetError):
        video.decode(data)


def test_duration_and_pixel_budgets(monkeypatch):
    settings = get_settings()
    monkeypatch.setattr(settings, "video_max_seconds", 1.0)
    with pytest.raises(video.VideoBudgetError, match="BLINDPAIR_VIDEO_MAX_SECONDS"):
        video.check_video_budget(video_bytes("webm", frames=16, fps=8))
    monkeypatch.setattr(settings, "video_max_seconds", 60.0)
    monkeypatch.setattr(settings, "gif_max_pixels", 64 * 64 * 10)
    with pytest.raises(video.VideoBudgetError, match="BLINDPAIR_GIF_MAX_PIXELS"):
        video.check_video_budget(video_bytes("mp4", frames=16))


@pytest.mark.parametrize("bad", [b"", b"\x00" * 64, b"....ftypisom" + b"\x00" * 20, b"\x1a\x45\xdf\xa3\x81"])
def test_garbage_is_refused_with_a_message(bad):
    with pytest.raises(video.VideoError):
        video.decode(bad)


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_canonical_bytes_carry_no_encoder_tag_or_date_and_are_reproducible(fmt):
    frames = video_frames(8)
    a, b = video.encode(frames, 8, fmt), video.encode(frames, 8, fmt)
    assert a == b  # same pixels, same bytes: nothing of time or machine enters
    for marker in (b"x264", b"Lavf6", b"Lavc", b"libvpx", b"DateUTC", b"creation_time"):
        assert marker not in a, marker
    assert b"\x44\x61" not in a[:400] or fmt == "mp4"  # Matroska DateUTC element id


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_padding_gives_one_size_and_one_layout_with_the_same_pixels(fmt):
    a = video.encode(video_frames(10, colour=(200, 40, 40)), 8, fmt)
    b = video.encode([np.clip(f.astype(int) + np.random.default_rng(1).integers(0, 60, f.shape), 0, 255)
                      .astype(np.uint8) for f in video_frames(10)], 8, fmt)
    assert len(a) != len(b)
    targets = video.padded_targets(fmt, [video.sample_sizes(a), video.sample_sizes(b)])
    pa, pb = video.pad_samples(a, fmt, targets), video.pad_samples(b, fmt, targets)
    assert len(pa) == len(pb)
    assert video.sample_sizes(pa) == video.sample_sizes(pb) == targets
    for raw, padded in ((a, pa), (b, pb)):
        assert all(np.array_equal(x, y) for x, y in
                   zip(video.decode(raw).frames, video.decode(padded).frames, strict=True))


def test_duplicate_copy_differs_in_bytes_not_visibly():
    clip = video.encode(video_frames(8), 8, "mp4")
    copy = video.duplicate_video(clip, "mp4")
    assert copy != clip
    a, b = video.decode(clip).frames, video.decode(copy).frames
    assert max(np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(a, b, strict=True)) < 1.0


def test_gif_frames_become_a_video_at_the_gif_rate():
    from tests.factories import gif_bytes

    data, decoded = video.canonicalize(gif_bytes(frames=6, size=(32, 32), fps=10), "webm")
    assert video.sniff(data) == "webm" and len(decoded.frames) == 6 and decoded.fps == 10
