import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from app.stats.clean_battle import read_clean_battle
from app.stats.ratings import bradley_terry, davidson, fit_bt, fit_davidson, ranks_from_intervals, to_rating

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


def test_a_tie_counts_half_a_win_to_each_side():
    # A scores 50 + 100/2 = 100 of 150, a 2/3 rate: gap 400 * log10(2)
    got = ratings_of(bradley_terry(battles({("A", "B"): (50, 0, 100)}), n_boot=0))
    assert got["A"] - got["B"] == pytest.approx(400 * math.log10(2), abs=1e-6)


def _fastchat_loss(ratings, matchups, outcomes, weights, alpha):
    # The loss of FastChat's bt_loss_and_grad (elo_analysis.py): labels 1 / 0.5 / 0, weighted by counts.
    p = expit(alpha * (ratings[matchups[:, 0]] - ratings[matchups[:, 1]]))
    return -((np.log(p) * outcomes + np.log(1 - p) * (1 - outcomes)) * weights).sum()


def test_newton_fit_matches_lbfgs_on_fastchats_loss():
    rng = np.random.default_rng(3)
    m = 5
    matchups = np.array([(i, j) for i in range(m) for j in range(i + 1, m)])
    counts = rng.integers(0, 30, size=(len(matchups), 3)).astype(float)
    theta, converged = fit_bt(matchups, counts[:, 0] + counts[:, 2] / 2, counts.sum(axis=1), m)
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
    assert wr[0][1] == pytest.approx(30 / 45) and wr[1][0] == pytest.approx(10 / 45) and wr[0][0] is None
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
    blocks = [bradley_terry(frame, n_boot=300, seed=s) for s in (0, 1)]
    for block in blocks:
        values = np.array([r["rating"] for r in block["ratings"]])
        assert np.isfinite(values).all() and values.mean() == pytest.approx(1000.0)
        assert block["converged"] and block["bootstrap_unit"] == "vote"
        assert all(r["ci"][0] < r["rating"] < r["ci"][1] for r in block["ratings"])
    assert blocks[0]["order"] == blocks[1]["order"]
    assert [r["rank"] for r in blocks[0]["ratings"]][0] == 1
    assert blocks[0]["n_battles"] == len(frame[frame["model_a"] != frame["model_b"]])
