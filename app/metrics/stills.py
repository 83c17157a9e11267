"""Metrics that need no flow: temporal flicker (VBench) and sharpness (variance of the Laplacian)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Series:
    value: float
    per_frame: list[float]


def flicker(frames: np.ndarray) -> Series:
    """Mean absolute difference between consecutive frames, RGB, on [0, 1].

    VBench's "temporal flickering" (Huang et al., CVPR 2024; ``vbench/temporal_flickering.py``) is the same mean
    absolute error over consecutive frames, reported as ``(255 - MAE) / 255``, i.e. ``1 - flicker``: higher there
    means steadier, higher here means more flicker. VBench applies it to clips generated from static prompts,
    where any change is flicker; on moving clips it also grows with motion, so read it beside the motion
    magnitude (the warping error subtracts what motion explains)."""
    if frames.shape[0] < 2:
        raise ValueError("flicker needs at least two frames")
    as_float = frames.astype(np.float32)
    per_frame = np.abs(np.diff(as_float, axis=0)).mean(axis=(1, 2, 3)) / 255.0
    return Series(value=float(per_frame.mean()), per_frame=[float(x) for x in per_frame])


def sharpness(gray: np.ndarray) -> Series:
    """Variance of the Laplacian of each grey frame (Pech-Pacheco et al., "Diatom autofocusing in brightfield
    microscopy", ICPR 2000): high for crisp edges and fine texture, low for blur. Scale-dependent: compare clips
    of one size only (a study's clips share theirs)."""
    per_frame = [float(cv2.Laplacian(g, cv2.CV_64F).var()) for g in gray]
    return Series(value=float(np.mean(per_frame)), per_frame=per_frame)
