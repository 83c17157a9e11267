"""Visibly degraded copies of a clip for attention checks: same size, frame count and timing, worse content.

An attention check puts a clip next to a degraded copy of itself; the copy must differ from the original
in nothing an evaluator could use except its quality. So every variant keeps the canvas size, the frame
count and every frame's duration, carries no metadata of the source (no comment, no extensions beyond
the looping block every clip has), and is encoded with Pillow like the worker's clips.

Variants:
- ``frozen``: the first frame repeated (a still image posing as a video).
- ``noise``: heavy Gaussian noise on every frame (sigma 64 on a 0-255 scale).
- ``scrambled``: the frames in a random order that is never the original one.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import GifImagePlugin, Image, ImageSequence

VARIANTS = ("frozen", "noise", "scrambled")
NOISE_SIGMA = 64.0
# Mean absolute difference between consecutive frames (0-255 scale) below which a clip is "nearly still":
# freezing or scrambling it would not be visibly worse, so only noise is a fair check for it.
MIN_MOTION_FOR_TEMPORAL = 2.0


class DegradeError(ValueError):
    """The source is not an animated GIF this module can degrade, or the variant does not apply to it."""


@dataclass(frozen=True)
class DecodedGif:
    frames: list[np.ndarray]  # RGB uint8, H x W x 3, fully composited
    durations_ms: list[int]
    loop: int

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


def decode_gif(data: bytes) -> DecodedGif:
    """Every frame as composited RGB plus its duration; Pillow applies GIF disposal while seeking."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as exc:  # Pillow raises several types for bad input
        raise DegradeError(f"not a decodable image: {exc}") from exc
    if im.format != "GIF":
        raise DegradeError(f"expected a GIF, got {im.format}")
    frames, durations = [], []
    for frame in ImageSequence.Iterator(im):
        frames.append(np.asarray(frame.convert("RGB"), dtype=np.uint8).copy())
        durations.append(int(frame.info.get("duration", 0) or 0))
    if len(frames) < 2:
        raise DegradeError("the GIF has a single frame; attention checks need an animation")
    return DecodedGif(frames, durations, int(im.info.get("loop", 0) or 0))


def encode_gif(frames: Sequence[np.ndarray], durations_ms: Sequence[int], loop: int = 0) -> bytes:
    """Encode RGB frames as an animated GIF, one frame per input frame.

    Pillow's ``save(save_all=True)`` merges consecutive identical frames into one longer frame (see
    ``_write_multiple_frames`` in PIL/GifImagePlugin.py), which would make a frozen copy a one-frame GIF
    and give it away. Pillow's documented legacy helpers ``getheader``/``getdata`` write a header and
    single frames without that merging, so the frame count is kept exactly.
    """
    if len(frames) != len(durations_ms) or not frames:
        raise DegradeError("need one duration per frame and at least one frame")
    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8), "RGB").quantize(256) for f in frames]
    header, _ = GifImagePlugin.getheader(images[0].copy(), info={"loop": loop, "duration": durations_ms[0]})
    out = io.BytesIO()
    out.write(b"".join(header))
    for image, duration in zip(images, durations_ms, strict=True):
        # Each frame carries its own colour table (as Pillow does for differing palettes).
        for chunk in GifImagePlugin.getdata(image, duration=duration, include_color_table=True):
            out.write(chunk)
    out.write(b";")
    return out.getvalue()


def motion_energy(frames: Sequence[np.ndarray]) -> float:
    """Mean absolute difference between consecutive frames, on a 0-255 scale."""
    if len(frames) < 2:
        return 0.0
    pairs = zip(frames[:-1], frames[1:], strict=True)
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in pairs]
    return float(np.mean(diffs))


def applicable_variants(data: bytes) -> tuple[str, ...]:
    """The variants that are visibly worse than this clip: temporal ones need a clip that moves."""
    decoded = decode_gif(data)
    if motion_energy(decoded.frames) < MIN_MOTION_FOR_TEMPORAL:
        return ("noise",)
    return VARIANTS


def _scramble_order(n: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    if n < 2:
        return order
    while order == sorted(order):
        rng.shuffle(order)
    return order


def degrade_frames(decoded: DecodedGif, variant: str, rng: random.Random) -> list[np.ndarray]:
    frames = decoded.frames
    if variant == "frozen":
        return [frames[0].copy() for _ in frames]
    if variant == "noise":
        gen = np.random.default_rng(rng.getrandbits(64))
        out = []
        for f in frames:
            noisy = f.astype(np.float32) + gen.normal(0.0, NOISE_SIGMA, size=f.shape).astype(np.float32)
            out.append(np.clip(noisy, 0, 255).astype(np.uint8))
        return out
    if variant == "scrambled":
        return [frames[i].copy() for i in _scramble_order(len(frames), rng)]
    raise DegradeError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def duplicate_gif(data: bytes) -> bytes:
    """The same pixels and timing in freshly encoded bytes, for the "same clip twice" check.

    Byte-identical copies would be served with the same size (and, if the server derives it from the
    content, the same ETag) on both sides, which tells anyone watching the network tab that this pair is a
    check. Re-encoding keeps every pixel (a GIF frame has at most 256 colours, which quantising to 256
    keeps exactly) while the byte count changes like any two clips'. If a frame composites to more than
    256 colours the re-encode would not be exact, and the original bytes are returned instead.
    """
    decoded = decode_gif(data)
    out = encode_gif(decoded.frames, decoded.durations_ms, loop=decoded.loop)
    again = decode_gif(out).frames
    if all(np.array_equal(a, b) for a, b in zip(decoded.frames, again, strict=True)):
        return out
    return data


def degrade_gif(data: bytes, variant: str, *, rng: random.Random | None = None) -> bytes:
    """A degraded copy of the GIF ``data``: same size, frame count and per-frame durations."""
    rng = rng or random.Random()
    decoded = decode_gif(data)
    if variant in ("frozen", "scrambled") and motion_energy(decoded.frames) < MIN_MOTION_FOR_TEMPORAL:
        raise DegradeError(f"the clip barely moves, so a {variant} copy would not look worse; use 'noise'")
    return encode_gif(degrade_frames(decoded, variant, rng), decoded.durations_ms, loop=decoded.loop)
