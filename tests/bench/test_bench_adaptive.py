"""bench/adaptive.py at a tiny size: it runs end to end, and its policies do what they say."""

from __future__ import annotations

import json

import numpy as np

from bench import adaptive as bench


def test_the_adaptive_bench_runs_and_its_table_says_what_it_measured(tmp_path):
    out = bench.main(["--reps", "6", "--quick", "--max-votes", "4000", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "adaptive.json").read_text())["meta"]["reps"] == 6
    table = (tmp_path / "adaptive.md").read_text()
    assert table.count("\n|") == 2 + len(out["rows"]) * len(bench.TARGETS)
    for row in out["rows"]:
        for policy in bench.POLICIES:
            cell = row[policy]
            assert all(cell[t]["not_met"] == 0 for t in bench.TARGETS)
            # every interval below the width needs at least as many votes as their average below it
            assert cell["win_max"]["mean"] >= cell["win_mean"]["mean"]
            assert cell["bt_max"]["mean"] >= cell["bt_mean"]["mean"]
        assert row["saving_vs_random"]["win_max"] == 1 - row["adaptive"]["win_max"]["mean"] / row["random"]["win_max"][
            "mean"]


def test_adaptive_moves_votes_off_the_lopsided_pairs_and_least_voted_balances():
    """The bench's policies on one scenario, counted directly: a uniform design where it should be, Eq. 9 not."""
    scenario = bench.Scenario("one far ahead", (0.0, 0.1, 3.0))
    per_policy = {}
    for policy in ("least_voted", "adaptive"):
        counts = bench.allocation(scenario, policy, reps=50, votes=300, rng=np.random.default_rng(1))
        per_policy[policy] = counts.mean(axis=0)
    # pairs (0,1), (0,2), (1,2): the close pair (0,1) is the uncertain one
    assert np.ptp(per_policy["least_voted"]) <= 1
    assert per_policy["adaptive"][0] > 1.3 * per_policy["adaptive"][1]


def test_the_wilson_width_is_the_textbook_one():
    # 50 of 100: 0.5 +- 1.96 * sqrt(0.25/100 + 1.96^2/40000) / (1 + 1.96^2/100) -> width 0.1923 (Wilson 1927).
    assert abs(float(bench.wilson_width(np.array(50.0), np.array(100.0))) - 0.19234) < 1e-5
