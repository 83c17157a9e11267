"""bench/sequential.py at a tiny size: it runs end to end and its table says what it measured."""

from __future__ import annotations

import json

from bench import sequential as bench


def test_the_sequential_bench_runs_and_its_numbers_are_consistent(tmp_path):
    out = bench.main(["--reps", "4", "--quick", "--out", str(tmp_path)])
    rows = {r["scenario"]["name"]: r for r in out["rows"]}
    assert (tmp_path / "sequential.md").read_text().count("\n|") == len(rows) + 2
    assert json.loads((tmp_path / "sequential.json").read_text())["meta"]["reps"] == 4
    for r in rows.values():
        assert r["seq_votes_mean"] <= r["budget"] and r["votes_ratio"] == r["seq_votes_mean"] / r["n_fixed"]
        assert 0 <= r["seq_any_ni"]["rate"] <= 1
    # the worst case is bounded by design: no study runs past its budget, a few percent over the fixed design
    budget, fixed = bench.sizes()
    assert fixed < budget <= 1.15 * fixed
    # with the seed's truth every replicate decides every criterion early, on far fewer votes than the fixed design
    seed = rows["seed's truth (fast model clearly preferred)"]
    assert seed["seq_all_ni"]["rate"] == 1.0 and seed["votes_ratio"] < 0.7


def test_the_simulated_population_share_is_the_stated_truth():
    """The calibration integrates prompts, raters and careless raters out: the long-run share is the truth."""
    import numpy as np

    s = bench.Scenario("check", (0.45, 0.66), n_prompts=4000)
    study = bench.simulate(s, 40000, np.random.default_rng(0))
    for c, share in enumerate(s.shares):
        outcome = study["outcome"][:, c]
        decided = outcome != 2
        assert abs((outcome[decided] == 1).mean() - share) < 0.012
