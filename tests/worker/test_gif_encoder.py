"""worker.gif.encode_gif: Pillow's per-frame palettes, then gifsicle's lossy LZW at the mildest level that fits."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from app.media.gif import inspect_gif
from tests.conftest import IN_CI
from worker import gif as worker_gif

needs_gifsicle = pytest.mark.skipif(shutil.which("gifsicle") is None and not IN_CI,
                                    reason="gifsicle is not installed (apt-get install gifsicle; .ci/run does)")


def _noisy_frames(n=4, size=96, seed=0):
    """Busy texture that lossy LZW can shrink: smooth noise, drifting a little each frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
    return [Image.fromarray(np.clip(np.roll(big, i, axis=1) + rng.integers(-6, 7, big.shape), 0, 255)
                            .astype(np.uint8)) for i in range(n)]


def _sky_frames(n=4, size=128):
    """A smooth vertical gradient, brightening slowly: where a coarse palette shows bands."""
    y = np.linspace(0, 1, size)[:, None, None]
    sky = np.array([40.0, 90, 170]) + np.array([210.0, 100, -30]) * y
    return [Image.fromarray(np.broadcast_to(np.clip(sky + i, 0, 255), (size, size, 3)).astype(np.uint8))
            for i in range(n)]


def _decoded(data):
    with Image.open(io.BytesIO(data)) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB"), dtype=np.float64))
        return out


@needs_gifsicle
def test_a_looping_gif_with_every_frame_its_timing_and_nothing_else():
    data = worker_gif.encode_gif(_noisy_frames(), fps=8)
    info = inspect_gif(data)
    assert (info.frames, info.width, info.height, info.loop) == (4, 96, 96, 0)
    assert info.durations_ms == (120,) * 4  # 125 ms asked, whole centiseconds written
    assert info.extensions == ("app:NETSCAPE2.0",)  # the loop; no comment, no encoder id


@needs_gifsicle
def test_the_same_frames_give_the_same_bytes():
    frames = _noisy_frames()
    assert worker_gif.encode_gif(frames, fps=8) == worker_gif.encode_gif(frames, fps=8)


def _lossy_at(frames, level):
    """The clip at one lossy level, made as the encoder makes it: Pillow parts, gifsicle on each, joined, then
    written again by the canonical writer (its size is what the budget is checked on)."""
    from concurrent.futures import ThreadPoolExecutor

    from app.media import canonical
    from app.media.gif import join_gifs

    binary = shutil.which("gifsicle")
    with ThreadPoolExecutor(4) as pool:
        parts = worker_gif._pillow_parts(frames, fps=8, pool=pool)
    return canonical.canonicalize(join_gifs([worker_gif._gifsicle(binary, part, level) for part in parts]),
                                  shuffle=False)


@needs_gifsicle
def test_a_clip_gets_the_mildest_lossy_level_that_fits_the_budget(monkeypatch):
    frames = _noisy_frames()
    pillow = worker_gif._pillow_gif(frames, fps=8)
    by_level = {level: _lossy_at(frames, level) for level in worker_gif.LOSSY_LEVELS}
    sizes = [len(by_level[level]) for level in worker_gif.LOSSY_LEVELS]
    # Lossy LZW shrinks this texture at strong levels; written again exactly (the canonical writer), the
    # mildest level's saving on it is gone.
    assert sizes[-1] < sizes[0] <= len(pillow)
    for i, level in enumerate(worker_gif.LOSSY_LEVELS):
        budget = len(by_level[level])
        monkeypatch.setattr(worker_gif, "SIZE_BUDGET_BYTES", budget)
        mildest = next(lv for lv in worker_gif.LOSSY_LEVELS if len(by_level[lv]) <= budget)
        # A level that saves nothing over Pillow's file is not used (its pixels would only be worse).
        used = mildest if len(by_level[mildest]) < len(pillow) else None
        assert worker_gif.encode_gif(frames, fps=8) == (by_level[mildest] if used else pillow), (i, level)
        # The level used is reported with the clip (generation["gif_lossy_level"]), so compression can be
        # compared between models.
        assert worker_gif.encode_clip_gif(frames, fps=8)[2] == used
    monkeypatch.setattr(worker_gif, "SIZE_BUDGET_BYTES", 1)  # nothing fits: the strongest level
    assert worker_gif.encode_gif(frames, fps=8) == by_level[worker_gif.LOSSY_LEVELS[-1]]


@pytest.mark.parametrize("cores", [1, 3, 16])
def test_encoding_in_parts_changes_no_pixel_and_no_timing(monkeypatch, cores):
    # One part per core, joined: every frame must decode exactly as from one whole-clip Pillow file.
    monkeypatch.setattr(worker_gif.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(worker_gif, "MIN_PART_PIXELS", 1)  # parts even of these small frames
    frames = _noisy_frames(n=7)
    paletted = [worker_gif._quantise(f) for f in frames]
    whole = worker_gif._save(paletted, fps=8)
    parted = worker_gif._pillow_gif(frames, fps=8)
    assert [a.tolist() for a in _decoded(parted)] == [a.tolist() for a in _decoded(whole)]
    info = inspect_gif(parted)
    assert (info.frames, info.durations_ms, info.loop) == (7, (120,) * 7, 0)
    assert info.extensions == ("app:NETSCAPE2.0",)


def test_a_part_is_at_least_a_full_size_frame(monkeypatch):
    monkeypatch.setattr(worker_gif.os, "cpu_count", lambda: 16)
    assert worker_gif._parts([Image.new("RGB", (32, 32))] * 2) == 1  # tiny clips stay whole
    assert worker_gif._parts([Image.new("RGB", (512, 512))] * 16) == 16
    assert worker_gif._parts([Image.new("RGB", (256, 256))] * 16) == 4
    monkeypatch.setattr(worker_gif.os, "cpu_count", lambda: 2)
    assert worker_gif._parts([Image.new("RGB", (512, 512))] * 16) == 2


@needs_gifsicle
def test_a_smooth_gradient_keeps_its_local_means_no_bands():
    frames = _sky_frames()
    for source, decoded in zip(frames, _decoded(worker_gif.encode_gif(frames, fps=8)), strict=True):
        src = np.asarray(source, dtype=np.float64)

        def blocks(a):
            return a.reshape(16, 8, 16, 8, 3).mean(axis=(1, 3))

        # A band is a low-frequency error: the mean of every 8x8 block stays within 2 of the source.
        assert np.abs(blocks(decoded) - blocks(src)).max() <= 2


def test_without_gifsicle_the_pillow_gif_is_written_and_a_warning_says_why(monkeypatch, caplog):
    monkeypatch.setattr(worker_gif.shutil, "which", lambda name: None)
    frames = _noisy_frames()
    data = worker_gif.encode_gif(frames, fps=8)
    assert data == worker_gif._pillow_gif(frames, fps=8)
    assert "gifsicle is not installed" in caplog.text


@needs_gifsicle
def test_a_gifsicle_failure_is_an_error_that_says_so(monkeypatch):
    def broken(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0], stderr=b"gifsicle: read error")

    monkeypatch.setattr(worker_gif.subprocess, "run", broken)
    with pytest.raises(worker_gif.GifEncoderError, match="read error"):
        worker_gif.encode_gif(_noisy_frames(), fps=8)


def test_the_level_search_finds_the_mildest_fit_or_the_strongest():
    """The bisection against the obvious scan, on made-up size tables (no gifsicle needed)."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        sizes = sorted(rng.integers(1, 100, len(worker_gif.LOSSY_LEVELS)).tolist(), reverse=True)
        budget = int(rng.integers(0, 101))
        runs: list[int] = []

        def fake(level, sizes=sizes, runs=runs):
            runs.append(level)
            return b"x" * sizes[worker_gif.LOSSY_LEVELS.index(level)]

        worker_gif.SIZE_BUDGET_BYTES, saved = budget, worker_gif.SIZE_BUDGET_BYTES
        try:
            level, out = worker_gif._mildest_fit_level(fake)
        finally:
            worker_gif.SIZE_BUDGET_BYTES = saved
        expected = next((i for i, s in enumerate(sizes) if s <= budget), len(sizes) - 1)
        assert (level, len(out)) == (worker_gif.LOSSY_LEVELS[expected], sizes[expected]), (sizes, budget)
        # No level twice; the first level, a bisection of the other nine, and the strongest if nothing fits.
        assert len(runs) == len(set(runs)) and len(runs) <= 6
