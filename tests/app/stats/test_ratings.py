import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from app.stats.clean_battle import read_clean_battle
from app.stats.clustered import pigeonhole_weights
from app.stats.ratings import (
    PSEUDO_COUNT,
    battle_table,
    bootstrap_counts,
    bradley_terry,
    davidson,
    fit_bt,
    fit_davidson,
    ranks_from_intervals,
    to_rating,
)
from app.stats.synthetic import synthetic_votes

ARENA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "arena_votes" / "clean_battle_20240220.json"


def battles(spec):
    """spec: {(a, b): (wins_a, wins_b, ties)} -> a frame of individual battles."""
    rows = []
    for (a, b), (wa, wb, t) in spec.items():
        rows += [(a, b, "model_a")] * wa + [(a, b, "model_b")] * wb + [(a, b, "tie")] * t
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"]).assign(criterion="c")


def ratings_of(block):
    return {r["model"]: r["rating"] for r in block["ratings"]}


def test_symmetric_data_gives_equal_ratings_of_1000():
    spec = {("A", "B"): (10, 10, 4), ("B", "C"): (7, 7, 0), ("A", "C"): (5, 5, 2)}
    got = ratings_of(bradley_terry(battles(spec), n_boot=0))
    assert got == pytest.approx({"A": 1000.0, "B": 1000.0, "C": 1000.0}, abs=1e-6)


def test_75_percent_win_rate_is_a_gap_of_400_log10_3():
    got = ratings_of(bradley_terry(battles({("A", "B"): (75, 25, 0)}), n_boot=0))
    assert got["A"] - got["B"] == pytest.approx(400 * math.log10(3), abs=1e-6)  # 190.85
    assert (got["A"] + got["B"]) / 2 == pytest.approx(1000.0)


def test_a_tie_counts_for_neither_model():
    # A beats B 50 to 25 among decided battles: odds 2, gap 400 * log10(2), however many ties there are.
    for ties in (0, 100):
        got = ratings_of(bradley_terry(battles({("A", "B"): (50, 25, ties)}), n_boot=0))
        assert got["A"] - got["B"] == pytest.approx(400 * math.log10(2), abs=1e-6)


def _fastchat_loss(ratings, matchups, outcomes, weights, alpha):
    # The loss of FastChat's bt_loss_and_grad (elo_analysis.py): labels 1 / 0.5 / 0, weighted by counts.
    p = expit(alpha * (ratings[matchups[:, 0]] - ratings[matchups[:, 1]]))
    return -((np.log(p) * outcomes + np.log(1 - p) * (1 - outcomes)) * weights).sum()


def test_newton_fit_matches_lbfgs_on_fastchats_loss():
    rng = np.random.default_rng(3)
    m = 5
    matchups = np.array([(i, j) for i in range(m) for j in range(i + 1, m)])
    counts = rng.integers(1, 30, size=(len(matchups), 3)).astype(float)
    counts[:, 2] = 0  # decided battles: FastChat's loss with no tie rows
    theta, converged = fit_bt(matchups, counts[:, 0], counts[:, :2].sum(axis=1), m)
    assert converged[0]
    rows_m = np.repeat(matchups, 3, axis=0)
    outcomes = np.tile([1.0, 0.0, 0.5], len(matchups))
    weights = counts.ravel()
    alpha = math.log(10)
    res = minimize(_fastchat_loss, np.zeros(m), args=(rows_m, outcomes, weights, alpha), method="L-BFGS-B",
                   options={"gtol": 1e-10, "maxiter": 1000})
    fastchat = res.x * 400 + 1000
    fastchat += 1000 - fastchat.mean()
    np.testing.assert_allclose(to_rating(theta[0]), fastchat, atol=0.01)  # L-BFGS stops at its own tolerance


def test_ranks_from_non_overlapping_intervals():
    lower = np.array([1100.0, 1050.0, 900.0])
    upper = np.array([1200.0, 1120.0, 1000.0])
    assert ranks_from_intervals(lower, upper).tolist() == [1, 1, 3]


def test_block_shape_and_win_rates():
    spec = {("A", "B"): (30, 10, 5), ("B", "C"): (25, 15, 10), ("A", "C"): (40, 5, 5)}
    block = bradley_terry(battles(spec), n_boot=200, seed=1)
    assert block["order"] == ["A", "B", "C"]
    wr = block["win_rate"]
    assert wr[0][1] == pytest.approx(30 / 40) and wr[1][0] == pytest.approx(10 / 40) and wr[0][0] is None
    for r in block["ratings"]:
        assert r["ci"][0] <= r["rating"] <= r["ci"][1]
    assert block["predicted_win_rate"][0][1] + block["predicted_win_rate"][1][0] == pytest.approx(1.0)


def test_models_that_never_met_are_refused():
    with pytest.raises(ValueError, match="never met"):
        bradley_terry(battles({("A", "B"): (3, 2, 1), ("C", "D"): (2, 2, 0)}), n_boot=0)


PUDDING = """1-2: 19 22 16; 1-3: 16 19 12; 2-3: 19 19 10; 1-4: 18 23 13; 2-4: 23 19 9; 3-4: 19 20 15;
1-5: 13 19 18; 2-5: 16 20 12; 3-5: 16 15 17; 4-5: 17 14 16; 1-6: 18 21 12; 2-6: 22 20 12;
3-6: 13 18 10; 4-6: 14 19 18; 5-6: 11 21 12"""


def _pudding():
    spec = {}
    for part in PUDDING.replace("\n", " ").split(";"):
        pair, counts = part.split(":")
        i, j = pair.split("-")
        spec[(f"brand{i.strip()}", f"brand{j.strip()}")] = tuple(int(x) for x in counts.split())
    return spec


def test_davidson_1970_chocolate_pudding():
    spec = _pudding()
    names = [f"brand{k}" for k in range(1, 7)]
    matchups = np.array([(names.index(a), names.index(b)) for a, b in spec])
    fit = fit_davidson(matchups, np.array(list(spec.values())), 6)
    np.testing.assert_allclose(fit["worths"], [0.1388, 0.1730, 0.1617, 0.1654, 0.1587, 0.2024], atol=1e-3)
    assert fit["nu"] == pytest.approx(0.7468, abs=1e-3)
    assert fit["converged"]
    # and through the frame-level function
    result = davidson(battles(spec), models=names)
    assert {w["model"]: round(w["worth"], 3) for w in result["worths"]}["brand6"] == 0.202
    assert result["nu"] == pytest.approx(0.7468, abs=1e-3)


def test_davidson_needs_ties():
    assert davidson(battles({("A", "B"): (3, 2, 0)})) is None


@pytest.mark.skipif(not ARENA.exists(), reason="shared GenAI-Arena clean_battle log not present")
def test_genai_arena_log():
    frame = read_clean_battle(ARENA)
    frame = frame[frame["model_a"].str.endswith("_generation") & frame["model_b"].str.endswith("_generation")]
    blocks = [bradley_terry(frame, n_boot=300, seed=s, rater=None) for s in (0, 1)]
    for block in blocks:
        values = np.array([r["rating"] for r in block["ratings"]])
        assert np.isfinite(values).all() and values.mean() == pytest.approx(1000.0)
        assert block["converged"] and block["bootstrap_unit"] == "vote"
        assert all(r["ci"][0] < r["rating"] < r["ci"][1] for r in block["ratings"])
    assert blocks[0]["order"] == blocks[1]["order"]
    assert [r["rank"] for r in blocks[0]["ratings"]][0] == 1
    assert blocks[0]["n_battles"] == len(frame[frame["model_a"] != frame["model_b"]])


def test_a_model_that_never_lost_gets_a_finite_flagged_regularised_rating():
    spec = {("A", "B"): (20, 0, 3), ("B", "C"): (10, 10, 2), ("A", "C"): (15, 0, 1)}
    block = bradley_terry(battles(spec), n_boot=300, seed=2)
    assert block["regularised"] and block["converged"]
    assert block["separation"] == {"top": ["A"], "bottom": ["B", "C"]}
    got = ratings_of(block)
    # the fit with half a virtual win each way on every pair that met
    matchups = np.array([(0, 1), (1, 2), (0, 2)])
    wins = np.array([(20, 0), (10, 10), (15, 0)], dtype=float) + PSEUDO_COUNT
    theta, _ = fit_bt(matchups, wins[:, 0], wins.sum(axis=1), 3)
    np.testing.assert_allclose([got["A"], got["B"], got["C"]], to_rating(theta[0]), atol=1e-6)
    assert 1300 < got["A"] < 1700  # finite and moderate (the unbounded iteration reported 4175)
    top = block["ratings"][0]
    assert top["model"] == "A" and all(np.isfinite(top["ci"])) and top["ci"][1] - top["ci"][0] < 1000
    assert block["bootstrap_converged_share"] == 1.0 and block["bootstrap_regularised_share"] > 0.5


def test_the_mle_is_kept_when_it_exists():
    block = bradley_terry(battles({("A", "B"): (30, 10, 5), ("B", "C"): (25, 15, 10), ("A", "C"): (40, 5, 5)}),
                          n_boot=0)
    assert not block["regularised"] and block["separation"] is None and block["converged"]


def test_win_rates_agree_with_the_pairwise_preference_shares():
    from app.stats import compute_results

    votes = synthetic_votes(1500, seed=4, models=("M1", "M2", "M3"), criteria=("overall_quality",), effect=0.3)
    res = compute_results(votes, n_boot=0)
    block = res["ratings"]["overall_quality"]
    order = block["order"]
    assert block["tie_rule"].startswith("decided votes only")
    for rec in res["criteria"]:
        i, j = order.index(rec["model_a"]), order.index(rec["model_b"])
        assert block["win_rate"][i][j] == pytest.approx(rec["pref_rate_a"])
        assert block["win_rate"][j][i] == pytest.approx(1 - rec["pref_rate_a"])
        # the model with more wins is above 50% against the other, whatever the ties
        assert (block["win_rate"][i][j] > 0.5) == (rec["wins_a"] > rec["wins_b"])
    assert block["n_decided"] + block["n_ties"] == block["n_battles"]


def test_bootstrap_resamples_prompts_and_raters_together():
    votes = synthetic_votes(300, seed=5, models=("M1", "M2", "M3"), criteria=("c",), n_prompts=12,
                            n_evaluators=9)
    models, table = battle_table(votes)
    boot, unit, approximate = bootstrap_counts(votes, models, table, n_boot=50, seed=7)
    assert unit == "prompt x rater" and approximate  # 12 prompts and 9 raters: few clusters
    # the same draws, row by row: a vote weighs its prompt's draw count times its rater's
    prompts = np.unique(votes["prompt"], return_inverse=True)[1]
    raters = np.unique(votes["evaluator"], return_inverse=True)[1]
    weights = pigeonhole_weights(prompts, raters, 50, np.random.default_rng(7))
    i, j = (np.array([models.index(x) for x in votes[c]]) for c in ("model_a", "model_b"))
    cell = [table.index[(table["i"] == min(a, b)) & (table["j"] == max(a, b))][0] for a, b in zip(i, j, strict=True)]
    w = votes["winner"].to_numpy()
    outcome = np.where(w == "tie", 2, np.where((w == "model_a") == (i < j), 0, 1))
    onehot = np.zeros((len(votes), len(table) * 3))
    onehot[np.arange(len(votes)), np.array(cell) * 3 + outcome] = 1
    np.testing.assert_allclose(boot.reshape(50, -1), weights @ onehot)


def _tastes(rng, n_votes=900, n_prompts=60, n_raters=20, rater_sd=1.0, prompt_sd=0.5):
    """Three models equally good in the population; each rater and prompt likes each model its own amount."""
    models = np.array(["A", "B", "C"])
    pair = np.array([(0, 1), (1, 2), (0, 2)])[rng.integers(3, size=n_votes)]
    prompt, rater = rng.integers(n_prompts, size=n_votes), rng.integers(n_raters, size=n_votes)
    taste, pull = rng.normal(0, rater_sd, (n_raters, 3)), rng.normal(0, prompt_sd, (n_prompts, 3))
    logit = (taste[rater, pair[:, 0]] - taste[rater, pair[:, 1]] + pull[prompt, pair[:, 0]]
             - pull[prompt, pair[:, 1]])
    a_wins, tie = rng.random(n_votes) < 1 / (1 + np.exp(-logit)), rng.random(n_votes) < 0.2
    return pd.DataFrame({"model_a": models[pair[:, 0]], "model_b": models[pair[:, 1]],
                         "winner": np.where(tie, "tie", np.where(a_wins, "model_a", "model_b")),
                         "prompt": prompt.astype(str), "evaluator": rater.astype(str), "criterion": "c"})


def test_intervals_cover_the_population_rating_despite_rater_tastes():
    # 20 raters with strong tastes (sd 1 per model): the interval must be about these models, not these raters.
    # Resampling prompts alone covered the true 1000 in about 61% of studies, votes alone 56%; two-way ~97%.
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(100):
        block = bradley_terry(_tastes(rng), n_boot=200, seed=1)
        lo, hi = next(r["ci"] for r in block["ratings"] if r["model"] == "A")
        covered += lo <= 1000 <= hi
        assert block["bootstrap_unit"] == "prompt x rater"
    assert covered >= 85


def test_davidson_has_clustered_intervals_and_survives_separation():
    spec = {("A", "B"): (30, 10, 5), ("B", "C"): (25, 15, 10), ("A", "C"): (40, 5, 5)}
    frame = battles(spec).assign(prompt=lambda f: [f"p{k % 15}" for k in range(len(f))],
                                 evaluator=lambda f: [f"e{k % 11}" for k in range(len(f))])
    dav = davidson(frame, n_boot=300, seed=3)
    assert dav["bootstrap_unit"] == "prompt x rater" and dav["approximate"]
    for w in dav["worths"]:
        assert w["ci"][0] <= w["rating"] <= w["ci"][1]
    assert dav["nu_ci"][0] <= dav["nu"] <= dav["nu_ci"][1] and not dav["regularised"]
    # A never lost nor tied (a tie would hold its worth back): no finite MLE, so the regularised fit, flagged
    separated = davidson(battles({("A", "B"): (20, 0, 0), ("B", "C"): (10, 10, 2), ("A", "C"): (15, 0, 0)}),
                         n_boot=100)
    assert separated["regularised"] and separated["converged"]
    assert all(np.isfinite(w["rating"]) and np.isfinite(w["ci"]).all() for w in separated["worths"])
    assert separated["bootstrap_converged_share"] == 1.0


def test_rate_models_draws_the_bootstrap_once_for_both_models():
    from app.stats.ratings import rate_models

    votes = synthetic_votes(400, seed=6, models=("M1", "M2", "M3"), criteria=("c",), n_prompts=30, n_evaluators=20)
    block = rate_models(votes, n_boot=100, seed=3)
    assert block["davidson"] == davidson(votes, n_boot=100, seed=3)
    assert {k: v for k, v in block.items() if k != "davidson"} == bradley_terry(votes, n_boot=100, seed=3)
