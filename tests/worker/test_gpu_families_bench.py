"""bench/gpu_families.py on the CPU at tiny size: the script the GPU run uses, end to end, so that run is ready."""

from __future__ import annotations

import json

from bench import gpu_families


def test_the_families_benchmark_runs_at_tiny_size(tmp_path):
    out = tmp_path / "families.json"
    report = gpu_families.main(["--tiny", "--pairs", "ltx", "--timed-steps", "2", "--no-save", "--json", str(out)])
    (result,) = json.loads(out.read_text())["results"]
    teacher, student = result["teacher"], result["student"]
    assert (teacher["preset"], student["preset"]) == ("ltx-video-0.9.7-dev", "ltx-video-0.9.7-distilled")
    # The cards' steps and CFG: 30 steps x 2 passes against 8 steps x 1.
    assert (teacher["card_steps"], teacher["evals_per_clip"]) == (30, 60)
    assert (student["card_steps"], student["evals_per_clip"]) == (8, 8)
    assert result["claimed"] == 7.5
    for m in (teacher, student):
        assert m["timed_steps"] == 2 and m["step_seconds"] > 0 and m["decode_seconds"] > 0
        assert m["clip_seconds"] == m["step_seconds"] * m["card_steps"] + m["decode_seconds"]
    assert "card's claim (evaluations)" in report.markdown() and "| ltx | teacher |" in report.markdown()
