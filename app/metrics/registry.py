"""Every automatic metric: what it measures, its source, its version, and the criteria it speaks to.

A metric's ``version`` changes whenever its definition or parameters do, so stored values from different
definitions are never compared. ``criteria`` pairs a rating criterion with the direction the metric should
move for the clip raters preferred on it: +1 the winner should have the higher value, -1 the lower one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.metrics import flow, iq, stills
from app.metrics.frames import to_gray


@dataclass(frozen=True)
class MetricSpec:
    name: str
    version: str
    label: str
    unit: str
    better: str  # "higher" | "lower" | "neither" (more motion is not better or worse in itself)
    description: str
    source: str
    criteria: tuple[tuple[str, int], ...] = ()
    needs_weights: bool = False


@dataclass(frozen=True)
class MetricValue:
    value: float
    version: str
    per_frame: list[float | None] | None = None  # None where a frame's value is not finite


@dataclass
class Measurement:
    """The metrics of one clip, and the ones left out with the reason."""

    values: dict[str, MetricValue] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


_FLOW_VERSION = f"farneback/{flow.FLOW_MAX_SIDE}px/1"
CLIP_SCORE = "clip_score"

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("motion_mean", _FLOW_VERSION, "Motion (mean flow)", "px/frame", "neither",
               "Mean optical-flow magnitude between consecutive frames, over every pixel: how much the picture "
               "moves, camera included.",
               "Farnebäck 2003, OpenCV calcOpticalFlowFarneback", (("motion_amplitude", +1),)),
    MetricSpec("motion_p95", _FLOW_VERSION, "Motion (95th percentile flow)", "px/frame", "neither",
               "95th percentile of the same flow magnitudes: how fast the fastest-moving part of the picture moves "
               "(a subject over a still background).",
               "Farnebäck 2003, OpenCV calcOpticalFlowFarneback", (("motion_amplitude", +1),)),
    MetricSpec("warp_error", _FLOW_VERSION, "Warping error", "mean |ΔRGB| / 255", "lower",
               "Each frame against the next one warped back along the flow: change that motion does not explain "
               "(flicker, morphing, boiling texture).",
               "Lai et al., ECCV 2018, Sec. 5.1 (without the occlusion mask)",
               (("appearance_distortion", -1), ("motion_naturalness", -1))),
    MetricSpec("flicker", "vbench-mae/1", "Temporal flicker", "mean |ΔRGB| / 255", "lower",
               "Mean absolute difference between consecutive frames; VBench's temporal-flickering score is "
               "1 − this value.",
               "Huang et al., VBench, CVPR 2024 (temporal_flickering.py)",
               (("appearance_distortion", -1), ("motion_naturalness", -1))),
    MetricSpec("sharpness", "laplacian-var/1", "Sharpness", "variance of the Laplacian", "higher",
               "Variance of the Laplacian of each grey frame, averaged: crisp edges and fine texture score high.",
               "Pech-Pacheco et al., ICPR 2000; OpenCV Laplacian", (("appearance_aesthetics", +1),)),
    MetricSpec("brisque", f"brisque-0.2-live/{iq.BRISQUE_FRAMES}f/1", "BRISQUE", "score (0 best)", "lower",
               f"No-reference image quality of {iq.BRISQUE_FRAMES} evenly spaced frames, averaged; the LIVE-trained "
               "model shipped in the brisque wheel.",
               "Mittal, Moorthy & Bovik, IEEE TIP 2012; PyPI brisque 0.2", (("appearance_aesthetics", -1),)),
    MetricSpec(CLIP_SCORE, "clip/1", "CLIP relevance", "cosine", "higher",
               "Mean cosine similarity between each frame's CLIP image embedding and the prompt's text embedding.",
               "Radford et al. 2021 (CLIP); CLIPScore, Hessel et al. 2021; VBench overall consistency",
               (("text_relevance", +1),), needs_weights=True),
)
WEIGHT_FREE: tuple[MetricSpec, ...] = tuple(m for m in METRICS if not m.needs_weights)
_BY_NAME = {m.name: m for m in METRICS}


def spec(name: str) -> MetricSpec:
    return _BY_NAME[name]


def compute_weight_free(frames: np.ndarray, *, names: set[str] | None = None,
                        iq_problem: Callable[[], str | None] = iq.brisque_problem) -> Measurement:
    """Every weight-free metric of one clip (or those in ``names``). ``frames``: (T, H, W, 3) uint8 RGB."""
    wanted = {m.name for m in WEIGHT_FREE} if names is None else set(names)
    out = Measurement()
    if frames.shape[0] < 2:
        out.skipped.update({n: "a single frame has no motion" for n in wanted
                            if n in {"motion_mean", "motion_p95", "warp_error", "flicker"}})
    else:
        if wanted & {"motion_mean", "motion_p95", "warp_error"}:
            field_ = flow.flow_field(frames)
            moved = flow.motion(field_)
            _put(out, "motion_mean", wanted, moved.mean, moved.mean_per_frame)
            _put(out, "motion_p95", wanted, moved.high, moved.high_per_frame)
            if "warp_error" in wanted:
                warp = flow.warping_error(field_)
                _put(out, "warp_error", wanted, warp.error, warp.per_frame)
        if "flicker" in wanted:
            f = stills.flicker(frames)
            _put(out, "flicker", wanted, f.value, f.per_frame)
    if "sharpness" in wanted:
        s = stills.sharpness(to_gray(frames))
        _put(out, "sharpness", wanted, s.value, s.per_frame)
    if "brisque" in wanted:
        problem = iq_problem()
        if problem:
            out.skipped["brisque"] = problem
        else:
            try:
                value, per_frame = iq.brisque_clip(frames)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:  # e.g. a flat frame's fit fails
                out.skipped["brisque"] = f"BRISQUE failed on this clip ({type(exc).__name__}: {exc})"
            else:
                _put(out, "brisque", wanted, value, per_frame)
    return out


def _put(out: Measurement, name: str, wanted: set[str], value: float,
         per_frame: list[float] | None) -> None:
    if name not in wanted:
        return
    if not np.isfinite(value):
        out.skipped[name] = "not a finite number for this clip"
        return
    out.values[name] = MetricValue(value=float(value), version=spec(name).version,
                                   per_frame=[float(x) if np.isfinite(x) else None for x in per_frame]
                                   if per_frame is not None else None)
