"""Motion magnitude and warping error from dense optical flow (Farneback, as implemented in OpenCV).

Flow: Gunnar Farnebäck, "Two-frame motion estimation based on polynomial expansion" (SCIA 2003), through
``cv2.calcOpticalFlowFarneback`` with OpenCV's tutorial parameters (pyramid scale 0.5, 3 levels, window 15,
3 iterations, polynomial neighbourhood 5 with sigma 1.2). VBench's "dynamic degree" uses RAFT, a learned flow
that needs weights; Farneback needs none and is deterministic on a CPU.

Frames are scaled down so the longer side is at most ``FLOW_MAX_SIDE`` pixels before the flow is computed
(a 512x512 clip's 15 flows take about a quarter of the time), and magnitudes are scaled back, so every number
is in pixels per frame of the clip as stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FLOW_MAX_SIDE = 256
# cv2.calcOpticalFlowFarneback(prev, next, flow, pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags)
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)
PERCENTILE = 95.0


@dataclass(frozen=True)
class FlowField:
    """Forward flows between consecutive frames at the working scale, and that scale's factor to the clip's."""

    flows: np.ndarray  # (frames - 1, h, w, 2) float32, pixels at the working scale
    gray: np.ndarray  # (frames, h, w) uint8 at the working scale
    rgb: np.ndarray  # (frames, h, w, 3) uint8 at the working scale
    to_clip: float  # multiply a working-scale distance by this to get clip pixels


def working_scale(height: int, width: int, max_side: int = FLOW_MAX_SIDE) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def flow_field(frames: np.ndarray, *, max_side: int = FLOW_MAX_SIDE) -> FlowField:
    """Farneback flow from each frame to the next. ``frames``: (T, H, W, 3) uint8 RGB, T >= 2."""
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError("optical flow needs at least two RGB frames")
    t, height, width = frames.shape[:3]
    h, w = working_scale(height, width, max_side)
    rgb = frames if (h, w) == (height, width) else np.stack(
        [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])
    flows = np.empty((t - 1, h, w, 2), dtype=np.float32)
    for i in range(t - 1):
        if np.array_equal(gray[i], gray[i + 1]):  # no motion by definition (Farneback's fit leaves ~1e-3 px of noise)
            flows[i] = 0.0
        else:
            flows[i] = cv2.calcOpticalFlowFarneback(gray[i], gray[i + 1], None, *FARNEBACK)
    return FlowField(flows=flows, gray=gray, rgb=rgb, to_clip=max(height / h, width / w))


@dataclass(frozen=True)
class Motion:
    mean: float  # mean flow magnitude over every pixel of every frame pair (clip pixels per frame)
    high: float  # PERCENTILE-th percentile of the same magnitudes, pooled over the frame pairs
    mean_per_frame: list[float]  # one per consecutive frame pair
    high_per_frame: list[float]


def motion(field: FlowField, *, percentile: float = PERCENTILE) -> Motion:
    """How far pixels move between consecutive frames: the mean (whole-frame motion, camera included) and a
    high percentile (the fastest-moving tenth of the picture, a subject moving over a still background)."""
    magnitude = np.hypot(field.flows[..., 0], field.flows[..., 1]) * field.to_clip
    per_mean = magnitude.mean(axis=(1, 2))
    per_high = np.percentile(magnitude.reshape(len(magnitude), -1), percentile, axis=1)
    return Motion(mean=float(magnitude.mean()), high=float(np.percentile(magnitude, percentile)),
                  mean_per_frame=[float(x) for x in per_mean], high_per_frame=[float(x) for x in per_high])


@dataclass(frozen=True)
class Warping:
    error: float  # mean absolute RGB difference on [0, 1] over frame pairs and valid pixels
    per_frame: list[float]


def warping_error(field: FlowField) -> Warping:
    """Temporal consistency (Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018, Sec. 5.1): each
    frame against the next one warped back along the flow, ``|I_t(x) - I_{t+1}(x + F_{t->t+1}(x))|``.

    What flow can explain (motion) costs nothing; what it cannot (flicker, objects that morph or pop in, texture
    that boils) remains. Pixels whose flow points outside the frame are left out. Lai et al. also mask occlusions
    with a second, backward flow; that would double the cost, and occlusions are a small share of these clips'
    pixels, so they count here (the error is slightly higher for clips with much motion)."""
    _, h, w, _ = field.flows.shape
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    per_frame = []
    for i, flow in enumerate(field.flows):
        map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
        warped = cv2.remap(field.rgb[i + 1], map_x, map_y, interpolation=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        valid = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        diff = np.abs(field.rgb[i].astype(np.float32) - warped.astype(np.float32)).mean(axis=2)
        per_frame.append(float(diff[valid].mean() / 255.0) if valid.any() else 0.0)
    return Warping(error=float(np.mean(per_frame)), per_frame=per_frame)
