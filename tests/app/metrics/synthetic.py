"""Synthetic clips with known truth for the metric tests: textures that move by a set number of pixels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def texture(size: int, seed: int = 0, smooth: float = 2.0) -> np.ndarray:
    """A random RGB texture, lightly smoothed so the flow has gradients at every scale."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), smooth)


def moving_square(k: int, *, frames: int = 8, size: int = 128, square: int = 48, seed: int = 0) -> np.ndarray:
    """A textured square moving ``k`` pixels right per frame over a still, textured background."""
    background = (texture(size, seed + 1, smooth=4.0) // 2).astype(np.uint8)
    patch = texture(square, seed)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    y0 = (size - square) // 2
    for t in range(frames):
        out[t] = background
        x0 = 8 + t * k
        out[t, y0:y0 + square, x0:x0 + square] = patch
    return out


def panning(k: int, *, frames: int = 8, size: int = 128, seed: int = 0) -> np.ndarray:
    """The whole picture translating ``k`` pixels right per frame (a camera pan), cropped from a wider texture."""
    wide = texture(size + frames * k + 1, seed)[:size + frames * k + 1, :, :]
    wide = np.concatenate([wide] * 2, axis=0)[:size]
    return np.stack([wide[:, frames * k - t * k: frames * k - t * k + size] for t in range(frames)])


def frozen(*, frames: int = 8, size: int = 128) -> np.ndarray:
    return np.repeat(texture(size)[None], frames, axis=0)


def alternating(*, frames: int = 8, size: int = 128) -> np.ndarray:
    """Black and white frames in turn: the most flicker there is."""
    out = np.zeros((frames, size, size, 3), dtype=np.uint8)
    out[1::2] = 255
    return out


def gif(frames: np.ndarray, duration_ms: int = 120) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return buf.getvalue()
