"""The verdict's inference under crossed prompt x rater dependence: right variance, honest error rates, and a
star that never sits on an interval holding 50%."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from app.stats import compute_results
from app.stats.clustered import Clustering, share_inference
from app.stats.pairwise import preference_table
from app.stats.power import plan_votes
from app.stats.proportions import wilson_interval
from bench.verdicts import Design, rates, simulate


def _crossed(rng: np.random.Generator, n: int = 900, prompts: int = 40, raters: int = 25, sd: float = 0.7):
    p, e = rng.integers(0, prompts, n), rng.integers(0, raters, n)
    logit = rng.normal(0, sd, prompts)[p] + rng.normal(0, sd, raters)[e]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return y, p, e


def _one(y, d, clustering):
    return share_inference(y, d, np.zeros(len(y), dtype=np.int64), 1, clustering)


def test_variance_matches_statsmodels_cluster_robust_errors():
    """Cameron-Gelbach-Miller two-way and one-way cluster-robust standard errors, as statsmodels computes them
    for the mean (OLS on a constant, cov_type='cluster')."""
    y, p, e = _crossed(np.random.default_rng(0))
    ones = np.ones(len(y))
    two = sm.OLS(y, ones).fit(cov_type="cluster", cov_kwds={"groups": np.column_stack([p, e])})
    one = sm.OLS(y, ones).fit(cov_type="cluster", cov_kwds={"groups": p})
    assert _one(y, ones, Clustering(p, e)).se[0] == pytest.approx(float(two.bse[0]), rel=1e-10)
    assert _one(y, ones, Clustering(p, None)).se[0] == pytest.approx(float(one.bse[0]), rel=1e-10)


def test_independent_votes_give_the_score_interval():
    """Votes as their own clusters: the interval is the Wilson score interval (up to t vs normal and the n/(n-1)
    factor), and the p-value the score test's."""
    y = np.r_[np.ones(246), np.zeros(154)]
    res = _one(y, np.ones(400), Clustering(None, None))
    lo, hi = wilson_interval(246, 400)
    assert (res.lo[0], res.hi[0]) == pytest.approx((float(lo), float(hi)), abs=2e-3)
    z = (246 - 200) / np.sqrt(400 * 0.25 * 400 / 399)
    assert res.p_value[0] == pytest.approx(2 * stats.t.sf(z, 399), rel=1e-6)


def test_a_star_never_sits_on_an_interval_holding_half():
    rng = np.random.default_rng(3)
    seen_significant = 0
    for _ in range(300):
        y, p, e = _crossed(rng, n=int(rng.integers(30, 400)), prompts=int(rng.integers(3, 30)),
                           raters=int(rng.integers(3, 30)), sd=float(rng.uniform(0, 1.5)))
        y = np.where(rng.random(len(y)) < 0.1, 1.0, y)  # some cells lean one way
        res = _one(y, np.ones(len(y)), Clustering(p, e))
        if res.p_value[0] < 0.05:
            seen_significant += 1
            assert not res.lo[0] <= 0.5 <= res.hi[0]
        assert res.lo[0] <= res.estimate[0] <= res.hi[0]
    assert seen_significant > 10


def test_false_significance_stays_at_alpha_where_the_pooled_sign_test_does_not():
    """Prompt sd 1.0 (logit), 30 votes per prompt: the pooled sign test calls a 50/50 population significant on
    some criterion most of the time; the clustered verdict stays within alpha (binomial 99% bound)."""
    design = Design("prompt sd 1.0", 100, 50, 60, prompt_sd=1.0)
    result = rates(design, reps=120, seed=11)
    bound = stats.binom.ppf(0.99, 120, 0.05) / 120
    assert result["clustered"] <= bound
    assert result["independent"] > 0.3


@pytest.mark.parametrize(("prompts", "raters", "votes", "rater_sd", "prompt_sd"),
                         [(12, 8, 30, 0.5, 0.5), (100, 30, 60, 0.3, 0.0)], ids=["small-design", "30-raters"])
def test_one_test_rejects_at_alpha_not_far_below(prompts, raters, votes, rater_sd, prompt_sd):
    """Calibrated, not just safe: a single criterion's test of a 50/50 population rejects about alpha of the
    time. The uncentred cluster variance rejected 0% (12 prompts, 8 raters) and 2-3% (30 raters): it counted the
    evidence itself as variance. Two-sided binomial 99% bounds over 400 studies."""
    rng = np.random.default_rng(prompts * raters)
    design = Design("calibration", prompts, raters, votes, prompt_sd=prompt_sd, rater_sd=rater_sd)
    rejected = 0
    for _ in range(400):
        frame = simulate(design, rng)
        part = frame[frame["criterion"] == "overall_quality"]
        a = (part["winner"] == "model_a").to_numpy(dtype=float)
        d = (part["winner"] != "tie").to_numpy(dtype=float)
        res = _one(a, d, Clustering(part["prompt"].to_numpy(), part["evaluator"].to_numpy()))
        rejected += bool(res.p_value[0] < 0.05)
    assert stats.binom.ppf(0.005, 400, 0.05) <= rejected <= stats.binom.ppf(0.995, 400, 0.05)


def test_a_model_that_won_every_vote_gets_a_finite_interval():
    """Separation: every rater and prompt agree, so a cluster-robust variance is zero. The interval does not
    collapse to the point 100% (the floor at half the independent-votes variance), yet it is significant."""
    prompt, rater = np.arange(60) % 12, np.arange(60) % 8
    res = _one(np.ones(60), np.ones(60), Clustering(prompt, rater))
    assert res.hi[0] == 1.0 and 0.85 < res.lo[0] < 0.99
    assert res.p_value[0] < 0.05


def test_two_raters_with_strong_tastes_are_not_a_verdict():
    frame = simulate(Design("two raters", 100, 2, 300, rater_sd=1.5), np.random.default_rng(5))
    table = preference_table(frame, ["criterion", "model_a", "model_b"])
    assert (table["p_independent"] < 0.05).any()  # pooled, the tastes look like a finding
    assert not (table["p_value"] < 0.05).any()
    assert table["approximate"].all() and (table["df"] == 1).all()


def test_strong_consistent_preference_is_still_significant():
    frame = simulate(Design("clear", 100, 30, 20, prompt_sd=0.5, rater_sd=0.5, effect=1.0),
                     np.random.default_rng(6))
    table = preference_table(frame, ["criterion", "model_a", "model_b"])
    assert (table["p_value"] < 0.01).all() and (table["ci_lo"] > 0.55).all()
    assert not table["approximate"].any()


def test_ties_are_an_outcome_with_their_own_interval():
    frame = simulate(Design("ties", 60, 20, 30, prompt_sd=0.3, tie_rate=0.3), np.random.default_rng(8))
    table = preference_table(frame, ["criterion", "model_a", "model_b"])
    assert ((table["tie_lo"] < table["tie_rate"]) & (table["tie_rate"] < table["tie_hi"])).all()
    assert ((table["tie_lo"] < 0.3) & (0.3 < table["tie_hi"])).mean() >= 5 / 6
    # the preference share counts decided votes only
    assert np.allclose(table["pref_rate_a"], table["wins_a"] / (table["wins_a"] + table["wins_b"]))


def test_votes_needed_are_planned_not_read_off_the_observed_effect():
    """Power at the observed effect jumped from n/a at 100-100 to 489,235 at 101-100 (Hoenig & Heisey); the plan
    at a stated smallest effect does not depend on who leads by one vote, and grows with clustering."""
    kw: dict[str, Any] = {"n_prompts": 50, "n_raters": 20, "alpha": 0.05 / 7}
    even = plan_votes(n=250, decided=200, ties=50, deff_prompt=1.0, deff_rater=1.0, **kw)
    one_up = plan_votes(n=251, decided=201, ties=50, deff_prompt=1.0, deff_rater=1.0, **kw)
    assert even.total is not None and one_up.total is not None and abs(even.total - one_up.total) <= 2
    clustered = plan_votes(n=250, decided=200, ties=50, deff_prompt=1.8, deff_rater=3.0, **kw)
    assert clustered.total is None or clustered.total > even.total
    assert clustered.best_lever == "more raters"  # the rater ICC dominates: more votes per rater help least
    hopeless = plan_votes(n=2000, decided=2000, ties=0, deff_prompt=1.0, deff_rater=40.0, n_prompts=50, n_raters=3,
                          alpha=0.05)
    assert hopeless.total is None and not hopeless.reachable and hopeless.best_lever == "more raters"


def test_overall_is_in_the_criteria_family():
    frame = simulate(Design("family", 80, 30, 20, effect=0.15), np.random.default_rng(2))
    frame["vote_id"] = np.repeat(np.arange(len(frame) // 6), 6)
    res = compute_results(frame, n_boot=0)
    family = [r["p_value"] for r in res["criteria"] + res["overall"]]
    from app.stats.significance import adjust_pvalues

    expected = adjust_pvalues(np.array(family, dtype=float), "holm")
    got = [r["p_holm"] for r in res["criteria"] + res["overall"]]
    assert got == pytest.approx(list(expected))


def test_three_models_without_vote_ids_count_criteria_not_pairs():
    from app.stats import synthetic_votes

    votes = synthetic_votes(1500, models=("M1", "M2", "M3"), seed=6).drop(columns="vote_id")
    res = compute_results(votes, n_boot=50)
    assert " of 6 criteria" in res["headline"] and " of 18 " not in res["headline"]


def test_results_records_say_what_the_inference_rests_on():
    frame = simulate(Design("shape", 12, 8, 30, prompt_sd=0.5), np.random.default_rng(4))
    rec = compute_results(frame.assign(vote_id=np.repeat(np.arange(len(frame) // 6), 6)), n_boot=0)["criteria"][0]
    assert rec["inference_unit"] == "prompt x rater" and rec["approximate"] is True
    assert rec["n_prompts"] == 12 and rec["n_raters"] == 8 and rec["df"] == 7
    assert set(rec["independent"]) == {"wilson_ci", "p_value"}
    assert isinstance(pd.Series(rec["ci"]).iloc[0], float)


@pytest.mark.parametrize(("raters", "prompts", "rater_sd", "prompt_sd"), [(20, 100, 0.5, 0.0), (40, 100, 0.5, 0.5),
                                                                           (30, 7, 0.3, 0.5)],
                         ids=["20-raters", "40-raters-both", "theme-cell-7-prompts"])
def test_interval_covers_the_population_share(raters, prompts, rater_sd, prompt_sd):
    """The prompt-bootstrap interval covered 59% (20 raters, sd 0.5), 80% (40 raters, both sd 0.5) and 84-87% in
    a theme cell of 5-8 prompts; the crossed interval holds its 95% (99% binomial bound over 150 studies)."""
    rng = np.random.default_rng(raters + prompts)
    design = Design("coverage", prompts, raters, 30, prompt_sd=prompt_sd, rater_sd=rater_sd)
    covered = 0
    for _ in range(150):
        frame = simulate(design, rng)
        part = frame[frame["criterion"] == "overall_quality"]
        table = preference_table(part, ["criterion", "model_a", "model_b"])
        covered += bool(table["ci_lo"].iloc[0] <= 0.5 <= table["ci_hi"].iloc[0])
    assert covered >= stats.binom.ppf(0.01, 150, 0.95)
