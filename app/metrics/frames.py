"""Decoding a clip into frames for the metrics: every frame as it is shown (GIF disposal applied), RGB uint8."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError


class FramesError(ValueError):
    """The file is not a clip the metrics can read; the message says why."""


def read_gif_frames(source: bytes | Path) -> np.ndarray:
    """(frames, height, width, 3) uint8 RGB of an animated GIF (or any multi-frame image Pillow reads).

    Pillow composites each GIF frame onto the previous one as the disposal method says, so every array is the
    picture a viewer sees at that moment, which is what a rater judged.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError) as exc:
        raise FramesError(f"not a readable image sequence: {exc}") from exc
    if not frames:
        raise FramesError("the file has no frames")
    if len({f.shape for f in frames}) != 1:
        raise FramesError("the frames differ in size")
    return np.stack(frames)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """(frames, height, width) uint8 luma, ITU-R BT.601 weights as OpenCV's RGB2GRAY uses."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(frames.astype(np.float32) @ weights), 0, 255).astype(np.uint8)
