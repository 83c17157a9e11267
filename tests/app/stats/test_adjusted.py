"""Metrics beside the votes: agreement, motion-adjusted preference, prediction and cost, on synthetic studies whose
truth is known (votes that depend only on motion, or only on the model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.stats.adjusted import (
    MetricLink,
    adjusted_preference,
    cost_quality,
    metric_agreement,
    metric_analysis,
    pair_differences,
    predict_votes,
)

MODELS = ["fast", "slow"]


def synthetic_study(*, motion_effect: float = 1.5, model_effect: float = 0.0, n_prompts: int = 40,
                    n_raters: int = 25, votes_per_prompt: int = 8, seed: int = 3, tie_rate: float = 0.1,
                    swap_pairs: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Two models; "fast" moves less (motion ~ N(2, 1) against N(3.5, 1) px/frame). A vote for motion amplitude
    goes to A with probability expit(motion_effect * (motion_A - motion_B) + model_effect); distortion the other
    way round (less motion looks less distorted)."""
    rng = np.random.default_rng(seed)
    votes, pairs, metrics, costs = [], [], [], []
    vote_id = clip_id = 0
    for p in range(n_prompts):
        ma, mb = rng.normal(2, 1), rng.normal(3.5, 1)
        ca, cb = clip_id, clip_id + 1
        clip_id += 2
        metrics += [(ca, "fast", "motion_mean", ma), (cb, "slow", "motion_mean", mb),
                    (ca, "fast", "sharpness", rng.normal(100, 10)), (cb, "slow", "sharpness", rng.normal(100, 10))]
        costs += [(ca, "fast", rng.normal(0.6, 0.05)), (cb, "slow", rng.normal(4.0, 0.2))]
        for r in rng.choice(n_raters, votes_per_prompt, replace=False):
            vote_id += 1
            pairs.append((vote_id, cb, ca) if swap_pairs else (vote_id, ca, cb))
            for criterion, sign in (("motion_amplitude", 1), ("appearance_distortion", -1)):
                p_a = 1 / (1 + np.exp(-(sign * motion_effect * (ma - mb) + model_effect)))
                winner = "tie" if rng.random() < tie_rate else ("a" if rng.random() < p_a else "b")
                if swap_pairs:  # the same vote written with the pair the other way round
                    row = (vote_id, criterion, "slow", "fast", {"a": "model_b", "b": "model_a", "tie": "tie"}[winner])
                else:
                    row = (vote_id, criterion, "fast", "slow", {"a": "model_a", "b": "model_b", "tie": "tie"}[winner])
                votes.append((*row, f"p{p:03d}", f"e{r:02d}"))
    return (pd.DataFrame(votes, columns=["vote_id", "criterion", "model_a", "model_b", "winner", "prompt",
                                         "evaluator"]),
            pd.DataFrame(pairs, columns=["vote_id", "clip_a", "clip_b"]),
            pd.DataFrame(metrics, columns=["clip_id", "model", "metric", "value"]),
            pd.DataFrame(costs, columns=["clip_id", "model", "seconds"]))


CRITERIA = ["motion_amplitude", "appearance_distortion"]
LINKS = [MetricLink("motion_amplitude", "motion_mean", +1), MetricLink("appearance_distortion", "sharpness", +1)]


def _diffs(**kw):
    votes, pairs, metrics, _ = synthetic_study(**kw)
    return pair_differences(votes, pairs, metrics, models=MODELS, metrics=["motion_mean", "sharpness"])


def _by_criterion(records):
    return {r["criterion"]: r for r in records}


def test_votes_that_depend_only_on_motion_lose_their_preference_once_motion_is_adjusted_for():
    adjusted = _by_criterion(adjusted_preference(_diffs(), criteria=CRITERIA))
    for criterion in CRITERIA:
        r = adjusted[criterion]
        un, adj = r["unadjusted"], r["adjusted"]
        # Unadjusted: far from 50% and significant (fast loses motion amplitude, wins distortion).
        assert un["significant"] and not (un["ci"][0] <= 0.5 <= un["ci"][1])
        assert abs(un["share"] - 0.5) > 0.2
        # Adjusted: near 50%, the interval holds it, and the headline flag says the preference disappeared.
        assert adj["share"] == pytest.approx(0.5, abs=0.1)
        assert adj["ci"][0] <= 0.5 <= adj["ci"][1] and not adj["significant"]
        assert r["disappears"] and not r["appears"]
        coef = r["coefficients"][0]
        assert coef["metric"] == "motion_mean"
        if criterion == "motion_amplitude":  # more motion wins motion amplitude, loses distortion
            assert coef["ci"][0] > 0
        else:
            assert coef["ci"][1] < 0
    assert adjusted["motion_amplitude"]["unadjusted"]["share"] < 0.25


def test_a_real_model_preference_survives_the_adjustment():
    adjusted = _by_criterion(adjusted_preference(_diffs(motion_effect=0.0, model_effect=1.2), criteria=CRITERIA))
    for criterion in CRITERIA:
        r = adjusted[criterion]
        assert r["unadjusted"]["significant"] and r["adjusted"]["significant"] and not r["disappears"]
        assert r["adjusted"]["share"] > 0.65


def test_the_pair_orientation_does_not_change_anything():
    plain = adjusted_preference(_diffs(), criteria=CRITERIA)
    swapped = adjusted_preference(_diffs(swap_pairs=True), criteria=CRITERIA)
    for a, b in zip(plain, swapped, strict=True):
        assert (a["model_a"], a["model_b"]) == (b["model_a"], b["model_b"]) == ("fast", "slow")
        assert a["adjusted"]["share"] == pytest.approx(b["adjusted"]["share"])
        assert a["unadjusted"]["ci"] == pytest.approx(b["unadjusted"]["ci"])


def test_agreement_is_high_where_raters_follow_the_metric_and_chance_where_they_do_not():
    agreement = {(r["criterion"], r["metric"]): r for r in metric_agreement(_diffs(), LINKS)}
    motion = agreement[("motion_amplitude", "motion_mean")]
    assert motion["share"] > 0.75 and motion["ci"][0] > 0.5 and motion["significant"]
    sharp = agreement[("appearance_distortion", "sharpness")]  # sharpness is noise here
    assert sharp["ci"][0] <= 0.5 <= sharp["ci"][1]
    assert motion["n"] > 250 and motion["n_prompts"] == 40 and motion["n_raters"] == 25


def test_the_metrics_predict_held_out_prompts_better_than_the_favourite_when_votes_follow_motion():
    out = predict_votes(_diffs(), criteria=CRITERIA, features=["motion_mean", "sharpness"], folds=5)
    for r in out["criteria"]:
        assert r["folds"] == 5
        assert r["accuracy"]["share"] > r["baseline"]["share"] + 0.05
        assert r["accuracy"]["share"] > 0.7
    motion = next(r for r in out["criteria"] if r["criterion"] == "motion_amplitude")
    assert motion["coefficients"]["motion_mean"] > 0 and abs(motion["coefficients"]["sharpness"]) < 0.5


def test_folds_never_split_a_prompt():
    from app.stats.adjusted import _folds

    prompts = pd.Series([f"p{i % 13}" for i in range(200)])
    fold = _folds(prompts, 5, seed=0)
    assert pd.DataFrame({"p": prompts, "f": fold}).groupby("p")["f"].nunique().max() == 1
    assert set(fold) == set(range(5))


def test_cost_quality_gives_seconds_and_shares_with_intervals():
    votes, _, _, costs = synthetic_study()
    rows = {r["model"]: r for r in cost_quality(votes, costs, models=MODELS, criteria=CRITERIA, n_boot=200)}
    assert rows["fast"]["seconds"] == pytest.approx(0.6, abs=0.05)
    assert rows["fast"]["seconds_ci"][0] <= rows["fast"]["seconds"] <= rows["fast"]["seconds_ci"][1]
    assert rows["slow"]["seconds"] == pytest.approx(4.0, abs=0.2)
    for criterion in CRITERIA:
        fast, slow = rows["fast"]["shares"][criterion], rows["slow"]["shares"][criterion]
        assert fast["share"] + slow["share"] == pytest.approx(1.0)
        assert fast["ci"][0] <= fast["share"] <= fast["ci"][1]


def test_metric_analysis_is_json_ready_and_covers_the_overall_aggregate():
    import json

    votes, pairs, metrics, costs = synthetic_study(n_prompts=20)
    out = metric_analysis(votes, pairs, metrics, costs, models=MODELS, criteria=CRITERIA, links=LINKS,
                          metrics=["motion_mean", "sharpness"], n_boot=100)
    json.dumps(out, allow_nan=False)
    assert [r["criterion"] for r in out["adjusted"]] == [*CRITERIA, "overall"]
    assert out["clips_measured"] == 40 and out["n_votes"] == votes["vote_id"].nunique()
    summary = {s["metric"]: {m["model"]: m for m in s["models"]} for s in out["summary"]}
    assert summary["motion_mean"]["fast"]["mean"] < summary["motion_mean"]["slow"]["mean"]


def test_no_metrics_yet_gives_empty_sections_not_an_error():
    votes, pairs, _, costs = synthetic_study(n_prompts=5)
    empty = pd.DataFrame(columns=["clip_id", "model", "metric", "value"])
    out = metric_analysis(votes, pairs, empty, costs, models=MODELS, criteria=CRITERIA, links=LINKS, metrics=[],
                          adjust_for=[], n_boot=50)
    assert out["clips_measured"] == 0 and out["agreement"] == []
    assert all(r["adjusted"]["share"] == pytest.approx(r["unadjusted"]["share"]) for r in out["adjusted"]
               if r["adjusted"]["share"] is not None)


def test_one_sided_votes_say_why_there_is_no_logistic_fit():
    votes, pairs, metrics, _ = synthetic_study(n_prompts=6, tie_rate=0.0)
    votes["winner"] = "model_a"
    diffs = pair_differences(votes, pairs, metrics, models=MODELS, metrics=["motion_mean"])
    r = adjusted_preference(diffs, criteria=["motion_amplitude"])[0]
    assert r["adjusted"]["share"] is None and "same way" in r["adjusted"]["error"]
    assert not r["disappears"]
