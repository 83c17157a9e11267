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
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3":  # an MP4 or WebM clip of a video study
        return _read_video_frames(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError) as exc:
        raise FramesError(f"not a readable image sequence: {exc}") from exc
    if not frames:
        raise FramesError("the file has no frames")
    if len({f.shape for f in frames}) != 1:
        raise FramesError("the frames differ in size")
    return np.stack(frames)


def _read_video_frames(data: bytes) -> np.ndarray:
    """Every frame of a stored MP4/WebM clip (already checked against the budget when it was stored)."""
    import av

    try:
        with av.open(io.BytesIO(data), "r") as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError) as exc:
        raise FramesError(f"not a readable video: {exc}") from exc
    if not frames:
        raise FramesError("the file has no frames")
    return np.stack(frames)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """(frames, height, width) uint8 luma, ITU-R BT.601 weights as OpenCV's RGB2GRAY uses."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(frames.astype(np.float32) @ weights), 0, 255).astype(np.uint8)
