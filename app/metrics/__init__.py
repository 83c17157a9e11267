"""Automatic video metrics, weight-free and on the CPU: pure functions from decoded frames to numbers.

No database, no web, no torch (the import-linter contract "layers" keeps it in the domain core). What each
metric measures, its source and its version are in ``app.metrics.registry``; the CLIP text-video relevance
needs model weights and lives in ``worker/metrics.py``.
"""

from app.metrics.frames import FramesError, read_gif_frames
from app.metrics.registry import (
    CLIP_SCORE,
    METRICS,
    WEIGHT_FREE,
    MetricSpec,
    MetricValue,
    compute_weight_free,
    spec,
)

__all__ = [
    "CLIP_SCORE",
    "METRICS",
    "WEIGHT_FREE",
    "FramesError",
    "MetricSpec",
    "MetricValue",
    "compute_weight_free",
    "read_gif_frames",
    "spec",
]
