"""bench/adaptive.py at a tiny size: it runs end to end, and its policies do what they say."""

from __future__ import annotations

import json

import numpy as np

from bench import adaptive as bench


def test_the_adaptive_bench_runs_and_its_table_says_what_it_measured(tmp_path):
    out = bench.main(["--reps", "6", "--quick", "--max-votes", "3000", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "adaptive.json").read_text())["meta"]["reps"] == 6
    table = (tmp_path / "adaptive.md").read_text()
    assert table.count("\n|") == 2 + len(out["rows"]) * len(bench.TARGETS)
    for row in out["rows"]:
        for policy in bench.POLICIES:
            cell = row[policy]
            # every rating's interval is reached under every policy (the adaptive rule may leave a win rate
            # unmet: it starves pairs the ratings do not need, and the table says so)
            assert cell["bt_max"]["not_met"] == 0 and cell["bt_mean"]["not_met"] == 0
            # every interval below the width needs at least as many votes as their average below it
            assert cell["win_max"]["mean"] >= cell["win_mean"]["mean"]
            assert cell["bt_max"]["mean"] >= cell["bt_mean"]["mean"]
        saving = row["adaptive_saving_vs_random"]["bt_max"]
        assert saving == 1 - row["adaptive"]["bt_max"]["mean"] / row["random"]["bt_max"]["mean"]
        assert f"{saving:.1%}" in table


def test_the_policies_spend_votes_where_they_say():
    """Counted directly, one scenario: least-voted balances, Eq. 9 leaves the lopsided pairs, the design rule
    goes to the pairs that pin the least certain rating (the far-ahead model's)."""
    scenario = bench.Scenario("one far ahead", (0.0, 0.1, 3.0))
    per_policy = {}
    for policy in ("least_voted", "arena_eq9", "adaptive"):
        counts = bench.allocation(scenario, policy, reps=50, votes=300, rng=np.random.default_rng(1))
        per_policy[policy] = counts.mean(axis=0)
    # pairs (0,1), (0,2), (1,2): the close pair (0,1) is the uncertain win rate; model 2's rating is the least
    # certain one, pinned only by the lopsided pairs (0,2) and (1,2)
    assert np.ptp(per_policy["least_voted"]) <= 1
    assert per_policy["arena_eq9"][0] > 1.3 * per_policy["arena_eq9"][1]
    assert per_policy["adaptive"][1] + per_policy["adaptive"][2] > 0.8 * 300


def test_the_design_rule_narrows_every_rating_sooner_than_random_pairs():
    """A small, fast version of the bench's claim (one far-ahead model): the adaptive rule reaches every
    rating's interval below 0.5 with fewer votes than uniformly random pairs, by more than chance explains."""
    scenario = bench.Scenario("one far ahead", (0.0, 0.2, 0.4, 2.5))
    means = {}
    for j, policy in enumerate(("random", "adaptive")):
        met = bench.run(scenario, policy, 40, np.random.default_rng([5, j]), win_width=0.2, bt_width=0.5,
                        every=10, max_votes=4000)["bt_max"]
        assert (met <= 4000).all()
        means[policy] = (met.mean(), met.std(ddof=1) / np.sqrt(len(met)))
    gap = means["random"][0] - means["adaptive"][0]
    assert gap > 4 * np.hypot(means["random"][1], means["adaptive"][1]), means


def test_the_wilson_width_is_the_textbook_one():
    # 50 of 100: 0.5 +- 1.96 * sqrt(0.25/100 + 1.96^2/40000) / (1 + 1.96^2/100) -> width 0.1923 (Wilson 1927).
    assert abs(float(bench.wilson_width(np.array(50.0), np.array(100.0))) - 0.19234) < 1e-5


def test_a_model_that_always_wins_does_not_draw_every_vote(monkeypatch):
    """The guard of app.stats.adaptive.counted_models, measured: without it the model that wins every vote
    takes nearly all votes (no number of them narrows its interval); with it, about an even share."""
    scenario = bench.Scenario("one always wins", (0.0, 0.1, 0.2, 12.0))
    strong = [2, 4, 5]  # pairs (0,3), (1,3), (2,3) of the 6

    def share() -> float:
        counts = bench.allocation(scenario, "adaptive", reps=20, votes=400, rng=np.random.default_rng(2))
        return float(counts[:, strong].sum() / counts.sum())

    guarded = share()
    monkeypatch.setattr(bench, "counted_models", lambda wa, wb, t, pairs, m: np.ones(wa.shape[:-1] + (m,), bool))
    unguarded = share()
    assert unguarded > 0.85 and guarded < 0.6, (guarded, unguarded)
