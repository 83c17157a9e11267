"""Degraded attention-check copies: identical geometry and timing, visibly worse content."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from app.media.degrade import (
    MIN_MOTION_FOR_TEMPORAL,
    DegradeError,
    applicable_variants,
    decode_gif,
    degrade_gif,
    duplicate_gif,
    motion_energy,
    visible_motion,
)
from tests.factories import gif_bytes

REAL_GIFS = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "animatediff_gifs"


def _info(data: bytes) -> tuple[tuple[int, int], int, list[int], dict]:
    im = Image.open(io.BytesIO(data))
    durations = [f.info.get("duration") for f in ImageSequence.Iterator(im)]
    return im.size, im.n_frames, durations, dict(im.info)


@pytest.fixture
def source() -> bytes:
    return gif_bytes(frames=6, size=(48, 40), fps=8)


@pytest.mark.parametrize("variant", ["frozen", "noise", "scrambled"])
def test_variant_keeps_size_frame_count_and_timing(source, variant):
    out = degrade_gif(source, variant, rng=random.Random(1))
    size, n, durations, _ = _info(out)
    src_size, src_n, src_durations, _ = _info(source)
    assert (size, n, durations) == (src_size, src_n, src_durations)
    assert out != source


def test_frozen_repeats_the_first_frame(source):
    frames = decode_gif(degrade_gif(source, "frozen")).frames
    original = decode_gif(source).frames
    assert all(np.array_equal(f, frames[0]) for f in frames)
    # quantisation to a 256-colour palette is lossless for the factory's two-colour frames
    assert np.array_equal(frames[0], original[0])


def test_noise_is_heavy(source):
    original = decode_gif(source).frames
    noisy = decode_gif(degrade_gif(source, "noise", rng=random.Random(2))).frames
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(original, noisy, strict=True)]
    assert min(diffs) > 30  # sigma 64 noise, clipped: about 45 on average


def test_scrambled_is_a_true_reordering(source):
    original = decode_gif(source).frames
    for seed in range(5):
        scrambled = decode_gif(degrade_gif(source, "scrambled", rng=random.Random(seed))).frames
        as_bytes = sorted(f.tobytes() for f in scrambled)
        assert as_bytes == sorted(f.tobytes() for f in original)  # same multiset of frames
        assert [f.tobytes() for f in scrambled] != [f.tobytes() for f in original]  # different order


def test_duplicate_has_the_same_pixels_in_other_bytes(source):
    copy = duplicate_gif(source)
    assert copy != source
    a, b = decode_gif(source), decode_gif(copy)
    assert a.durations_ms == b.durations_ms and a.size == b.size
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))


def test_no_source_metadata_leaks():
    im = Image.open(io.BytesIO(gif_bytes(frames=4)))
    frames = [f.copy() for f in ImageSequence.Iterator(im)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=125, loop=0,
                   comment=b"model=lightning file=secret_name.gif")
    assert b"lightning" in buf.getvalue()
    for variant in ("frozen", "noise", "scrambled", "duplicate"):
        out = duplicate_gif(buf.getvalue()) if variant == "duplicate" else degrade_gif(buf.getvalue(), variant)
        assert b"lightning" not in out and b"secret_name" not in out
        assert "comment" not in Image.open(io.BytesIO(out)).info


def test_still_clip_only_allows_noise():
    still = gif_bytes(frames=4, size=(32, 32))
    im = Image.open(io.BytesIO(still))
    first = im.convert("RGB")
    buf = io.BytesIO()
    # two frames that differ in a single pixel: "moving" for GIF purposes, visually still
    second = first.copy()
    second.putpixel((0, 0), (255, 255, 255))
    first.save(buf, format="GIF", save_all=True, append_images=[second], duration=100, loop=0)
    data = buf.getvalue()
    assert visible_motion(decode_gif(data).frames) < MIN_MOTION_FOR_TEMPORAL
    assert applicable_variants(data) == ("noise",)
    with pytest.raises(DegradeError, match="barely moves"):
        degrade_gif(data, "frozen")
    assert Image.open(io.BytesIO(degrade_gif(data, "noise"))).n_frames == 2


def _gif(frames: list[Image.Image], ms: int = 125) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return buf.getvalue()


def _dithered_still_clip(n: int = 16, size: int = 96) -> bytes:
    """A still gradient, each frame dithered afresh onto a 16-colour palette (a GIF of a clip that does not move:
    the dither pattern changes wherever sensor-like noise tips a pixel, so raw pixels flicker)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, np.full_like(x, 128.0)], -1)
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for i in range(16) for v in (i * 17, (i * 7 % 16) * 17, 128)] + [0] * 720)
    frames = []
    for _ in range(n):
        f = np.clip(base + rng.normal(0, 1.5, base.shape), 0, 255).astype(np.uint8)
        frames.append(Image.fromarray(f, "RGB").quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG))
    return _gif(frames)


def _slowly_drifting_clip(n: int = 32, size: int = 96, px_per_frame: float = 0.15) -> bytes:
    """A smooth pattern panning 0.15 px a frame: little from one frame to the next, ~5 px over the clip."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for t in range(n):
        xs = x - px_per_frame * t
        f = np.stack([128 + 100 * np.sin(xs / 6), 128 + 100 * np.cos(y / 9), 128 + 60 * np.sin((xs + y) / 11)], -1)
        frames.append(Image.fromarray(f.clip(0, 255).astype(np.uint8), "RGB").quantize(64, dither=Image.Dither.NONE))
    return _gif(frames)


def test_motion_gate_ignores_dither_on_a_near_still_clip():
    # Issue 21: the gate measured raw frame differences, so the dither of a clip that does not move counted as
    # motion and it got frozen/scrambled checks that an honest, careful rater can fairly call indistinguishable.
    data = _dithered_still_clip()
    frames = decode_gif(data).frames
    assert motion_energy(frames) > 2 * MIN_MOTION_FOR_TEMPORAL  # raw pixels flicker a lot...
    assert visible_motion(frames) < MIN_MOTION_FOR_TEMPORAL / 2  # ...block averages barely move
    assert applicable_variants(data) == ("noise",)
    with pytest.raises(DegradeError, match="barely moves"):
        degrade_gif(data, "scrambled")


def test_motion_gate_lets_a_slow_drift_have_temporal_checks():
    # The other way round: a slow pan moves less than the old raw gate (2.0) from one frame to the next, so it
    # got only noise checks, though a frozen copy of it visibly stops.
    data = _slowly_drifting_clip()
    frames = decode_gif(data).frames
    assert motion_energy(frames) < 2.0
    assert visible_motion(frames) > MIN_MOTION_FOR_TEMPORAL
    assert applicable_variants(data) == ("frozen", "noise", "scrambled")
    assert visible_motion(decode_gif(degrade_gif(data, "frozen")).frames) == 0.0


@pytest.mark.skipif(not REAL_GIFS.is_dir(), reason="../shared/data/animatediff_gifs is not on this machine")
def test_motion_gate_on_the_reference_gifs():
    # The two reference clips that barely move get noise only; a camera pan gets every variant.
    still = REAL_GIFS / "adiff_v1_filmvelvia_03.gif"
    pan = REAL_GIFS / "adiff_v2_motionlora_panleft.gif"
    assert applicable_variants(still.read_bytes()) == ("noise",)
    assert applicable_variants(pan.read_bytes()) == ("frozen", "noise", "scrambled")


def test_bad_input_is_refused_clearly(source):
    with pytest.raises(DegradeError, match="not a decodable image"):
        degrade_gif(b"not a gif", "noise")
    with pytest.raises(DegradeError, match="unknown variant"):
        degrade_gif(source, "blurred")
    single = io.BytesIO()
    Image.new("RGB", (8, 8)).save(single, format="GIF")
    with pytest.raises(DegradeError, match="single frame"):
        degrade_gif(single.getvalue(), "noise")


@pytest.mark.skipif(not REAL_GIFS.is_dir(), reason="../shared/data/animatediff_gifs is not on this machine")
def test_real_animatediff_gif_keeps_geometry():
    path = sorted(REAL_GIFS.glob("*.gif"))[0]
    data = path.read_bytes()
    src = _info(data)
    for variant in applicable_variants(data):
        out = _info(degrade_gif(data, variant, rng=random.Random(0)))
        assert out[:3] == src[:3], variant


def _layout(data: bytes) -> dict:
    """The encoding of a GIF, not its content: tables, blocks, code sizes, delays (lengths aside)."""
    from tests.app.media.anatomy import byte_features

    content = ("size", "_data", "_sub_blocks", "_last_sub_block", "_sub_block_layout")
    return {k: v for k, v in byte_features(data).items() if not k.endswith(content)}


@pytest.mark.parametrize("variant", ["frozen", "noise", "scrambled", "duplicate"])
def test_a_copy_is_written_like_the_clip_it_imitates(source, variant):
    # Issue 12: copies carried a local colour table on every frame where the clips had one global table, and
    # a script answered every check from that. Stored clips and copies now share one writer.
    from app.media.canonical import canonicalize, frame_data_lengths

    clip = canonicalize(source)  # as the import stores it
    copy = duplicate_gif(clip) if variant == "duplicate" else degrade_gif(clip, variant, rng=random.Random(4))
    assert _layout(copy) == _layout(clip)
    assert len(frame_data_lengths(copy)) == len(frame_data_lengths(clip))


def test_a_noise_copy_needs_no_more_bytes_than_its_clip():
    """Clips of a prompt are served at its longest frames: a noise copy must not make them all heavier."""
    from app.media.canonical import canonicalize, frame_data_lengths

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(base).resize((160, 160), Image.Resampling.BICUBIC))
    frames = [Image.fromarray(np.roll(smooth, 3 * i, axis=1)).quantize(256) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    clip = canonicalize(buf.getvalue())
    noisy = degrade_gif(clip, "noise", rng=random.Random(1))
    assert all(n <= c for n, c in zip(frame_data_lengths(noisy), frame_data_lengths(clip), strict=True))
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean()
             for a, b in zip(decode_gif(clip).frames, decode_gif(noisy).frames, strict=True)]
    assert min(diffs) > 30  # still heavy noise
