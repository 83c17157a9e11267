"""bench.metrics runs end to end at its tiny size: every part of every clip is timed and the tables are written.
No timing is asserted (timings belong in BENCHMARKS.md)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_metrics_benchmark_runs_tiny(tmp_path):
    from bench import metrics

    report = metrics.main(["--tiny", "--results-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "metrics.md").read_text().startswith("## ")
    clips = saved["data"]["clips"]
    assert clips and clips[-1]["clip"].startswith("synthetic pan")
    assert clips[-1]["motion_mean"] == pytest.approx(4.0, rel=0.15)  # the pan moves 4 px per frame
    for clip in clips:
        assert clip["weight_free_s"] > 0 and clip["clip_cpu_s"] > 0
        assert {"motion_mean", "motion_p95", "warp_error", "flicker", "sharpness"} <= set(clip["metrics"])
    assert len(report.tables) == 2
