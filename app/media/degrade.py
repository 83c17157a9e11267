"""Visibly degraded copies of a clip for attention checks: same size, frame count and timing, worse content.

An attention check puts a clip next to a degraded copy of itself; the copy must differ from the original
in nothing an evaluator could use except its quality. So every variant keeps the canvas size, the frame
count and every frame's duration, and is written by the one canonical writer every stored clip goes through
(``app.media.canonical``): the same layout, colour tables and extensions as the clips it imitates, so its
bytes cannot say it is a copy (a script answered every check from the local colour tables Pillow gave the
copies and the originals lacked).

Variants:
- ``frozen``: the first frame repeated (a still image posing as a video).
- ``noise``: heavy Gaussian noise on every frame (sigma 64 on a 0-255 scale), in square cells of a size
  chosen so that no frame of the copy needs a longer LZW stream than the clip's own (``NOISE_CELLS``).
- ``scrambled``: the frames in a random order that is never the original one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.media import canonical

VARIANTS = ("frozen", "noise", "scrambled")
NOISE_SIGMA = 64.0
# Noise cell sizes in pixels, finest first. Per-pixel noise is what LZW compresses worst: a noise copy of a
# 256x256 AnimateDiff clip needed 55 % more bytes than the clip, and clips of a prompt are served at the
# length of the longest one (app/web/media.py), so its pair would have been served that much larger and
# slower, a tell of its own. The finest cells whose every frame fits the source's frame lengths are used;
# cells stay small enough that the shorter side of the frame holds at least MIN_NOISE_CELLS_ACROSS of them
# (it must look like noise, not a mosaic), and a flat clip whose bytes no noise fits gets the coarsest of those.
NOISE_CELLS = (1, 2, 3, 4, 6, 8, 12, 16)
MIN_NOISE_CELLS_ACROSS = 32
# Whether freezing or scrambling a clip would look worse is judged on ``visible_motion``: the clip's frames
# averaged over MOTION_BLOCK x MOTION_BLOCK pixel blocks, then the mean absolute difference (0-255 scale) over
# every pair of frames. Block averaging, because a GIF's dither changes pixels between frames of a clip that does
# not move: the raw frame difference of the reference AnimateDiff GIFs is 2-5 times the block-averaged one
# (the 40 reference GIFs in ../shared/data/animatediff_gifs), so near-still clips passed the old raw gate and
# got frozen/scrambled checks an honest rater can fairly call indistinguishable. Every pair of frames, not
# consecutive ones, because a slow drift moves little from one frame to the next but a lot over the clip, and
# a frozen copy (every frame against the first) or a scrambled one (frames side by side in random order) shows
# exactly that. Below MIN_MOTION_FOR_TEMPORAL a clip is "nearly still" and only noise is a fair check for it.
# 2.5 on the 40 reference GIFs: the two that barely move (filmvelvia_03: 2.2; compare_mmv15_2: 2.0) get noise
# only, every other one (3.7 and up: a pan, a drift, a gesture) is allowed all three.
MOTION_BLOCK = 8
MOTION_SAMPLES = 64
MIN_MOTION_FOR_TEMPORAL = 2.5


class DegradeError(ValueError):
    """The source is not an animated GIF this module can degrade, or the variant does not apply to it."""


@dataclass(frozen=True)
class DecodedGif:
    frames: list[np.ndarray]  # RGB uint8, H x W x 3, fully composited
    durations_ms: list[int]

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


def decode_gif(data: bytes) -> DecodedGif:
    """Every frame as composited RGB plus its duration, as ``app.media.canonical`` decodes a clip."""
    try:
        video = canonical.decode_video(data)
    except canonical.CanonicalGifError as exc:
        raise DegradeError(f"not a decodable image: {exc}") from exc
    if len(video.frames) < 2:
        raise DegradeError("the GIF has a single frame; attention checks need an animation")
    return DecodedGif(list(video.frames), list(video.durations_ms))


def encode_gif(frames: Sequence[np.ndarray], durations_ms: Sequence[int]) -> bytes:
    """Encode RGB frames with the canonical writer, one frame per input frame.

    A frame with more than 256 colours (noise) is first reduced to 256 by median cut, as the worker reduces
    its frames (worker/gif.py); a frame that has 256 or fewer keeps every pixel.
    """
    if len(frames) != len(durations_ms) or not frames:
        raise DegradeError("need one duration per frame and at least one frame")
    return canonical.encode([_at_most_256_colours(f) for f in frames], durations_ms)


def _at_most_256_colours(frame: np.ndarray) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB")
    if image.getcolors(256) is not None:
        return np.asarray(image)
    return np.asarray(image.quantize(256).convert("RGB"))


def motion_energy(frames: Sequence[np.ndarray]) -> float:
    """Mean absolute difference between consecutive frames, on a 0-255 scale (raw pixels, dither included)."""
    if len(frames) < 2:
        return 0.0
    pairs = zip(frames[:-1], frames[1:], strict=True)
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in pairs]
    return float(np.mean(diffs))


def _block_means(frame: np.ndarray, block: int) -> np.ndarray:
    h, w = frame.shape[:2]
    bh, bw = max(1, h // block), max(1, w // block)
    size_h, size_w = (h // bh) * bh, (w // bw) * bw  # a frame smaller than one block is one block
    cropped = frame[:size_h, :size_w].astype(np.float32)
    return cropped.reshape(bh, size_h // bh, bw, size_w // bw, -1).mean(axis=(1, 3))


def visible_motion(frames: Sequence[np.ndarray], *, block: int = MOTION_BLOCK) -> float:
    """Mean absolute difference between block-averaged frames over every pair of frames (0-255 scale).

    Dither (pixels that flicker between palette colours where nothing moves) averages out inside a block; a
    drift or a gesture does not. See MIN_MOTION_FOR_TEMPORAL for why every pair rather than neighbours.
    """
    if len(frames) < 2:
        return 0.0
    # At most MOTION_SAMPLES frames, evenly spaced: the pairs grow with the square of the count.
    picked = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), MOTION_SAMPLES)).round().astype(int))
    means = np.stack([_block_means(frames[i], block) for i in picked])  # n x bh x bw x channels
    n = len(means)
    total = 0.0
    for i in range(n - 1):
        total += float(np.abs(means[i + 1:] - means[i]).mean(axis=(1, 2, 3)).sum())
    return total / (n * (n - 1) / 2)


def applicable_variants(data: bytes) -> tuple[str, ...]:
    """The variants that are visibly worse than this clip: temporal ones need a clip that moves."""
    decoded = decode_gif(data)
    if visible_motion(decoded.frames) < MIN_MOTION_FOR_TEMPORAL:
        return ("noise",)
    return VARIANTS


def _scramble_order(n: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    if n < 2:
        return order
    while order == sorted(order):
        rng.shuffle(order)
    return order


def _noisy(frames: Sequence[np.ndarray], gen: np.random.Generator, *, cell: int) -> list[np.ndarray]:
    out = []
    for f in frames:
        h, w = f.shape[:2]
        noise = gen.normal(0.0, NOISE_SIGMA, size=(-(-h // cell), -(-w // cell), f.shape[2])).astype(np.float32)
        noise = np.repeat(np.repeat(noise, cell, axis=0), cell, axis=1)[:h, :w]
        out.append(np.clip(f.astype(np.float32) + noise, 0, 255).astype(np.uint8))
    return out


def degrade_frames(decoded: DecodedGif, variant: str, rng: random.Random) -> list[np.ndarray]:
    frames = decoded.frames
    if variant == "frozen":
        return [frames[0].copy() for _ in frames]
    if variant == "noise":
        return _noisy(frames, np.random.default_rng(rng.getrandbits(64)), cell=1)
    if variant == "scrambled":
        return [frames[i].copy() for i in _scramble_order(len(frames), rng)]
    raise DegradeError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def duplicate_gif(data: bytes) -> bytes:
    """The same pixels and timing in freshly written bytes, for the "same clip twice" check.

    The canonical writer orders every frame's colours by a keyed permutation that differs for a copy
    (``role="duplicate"``), so the copy's bytes differ from the clip's the way any two clips' do
    (byte-identical sides would tell the check apart without a look at the pixels), while its length and
    layout are the clip's exactly.
    """
    try:
        return canonical.canonicalize(data, role="duplicate")
    except canonical.CanonicalGifError as exc:
        raise DegradeError(f"cannot copy the clip without changing a pixel: {exc}") from exc


def degrade_gif(data: bytes, variant: str, *, rng: random.Random | None = None) -> bytes:
    """A degraded copy of the GIF ``data``: same size, frame count and per-frame durations."""
    rng = rng or random.Random()
    decoded = decode_gif(data)
    if variant in ("frozen", "scrambled") and visible_motion(decoded.frames) < MIN_MOTION_FOR_TEMPORAL:
        raise DegradeError(f"the clip barely moves, so a {variant} copy would not look worse; use 'noise'")
    if variant != "noise":
        return encode_gif(degrade_frames(decoded, variant, rng), decoded.durations_ms)
    limits = canonical.frame_data_lengths(canonical.encode(decoded.frames, decoded.durations_ms, shuffle=False))
    seed = rng.getrandbits(64)
    w, h = decoded.size
    cells = [c for c in NOISE_CELLS if c == 1 or min(w, h) // c >= MIN_NOISE_CELLS_ACROSS]
    for cell in cells:
        out = encode_gif(_noisy(decoded.frames, np.random.default_rng(seed), cell=cell), decoded.durations_ms)
        if all(n <= limit for n, limit in zip(canonical.frame_data_lengths(out), limits, strict=True)):
            break
    return out
