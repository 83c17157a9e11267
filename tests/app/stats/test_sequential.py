"""The anytime-valid decisions of a study's plan (app/stats/sequential.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.optimize import brentq
from scipy.special import expit
from statsmodels.stats.power import NormalIndPower

from app.stats.clustered import Clustering, sum_variance
from app.stats.sequential import (
    Question,
    decide,
    fixed_sample_decided,
    mixture_boundary,
    mixture_rho,
    plan_design,
    score_path,
    study_decisions,
)

# Reference values from the confseq package (Howard & Waudby-Smith, github.com/gostevehoward/confseq) 0.0.11,
# built once from its sdist with Boost headers in a scratch virtualenv outside the project (the project does not
# depend on it): confseq.boundaries.normal_mixture_bound(v, alpha, v_opt, alpha_opt=alpha, is_one_sided=False)
CONFSEQ_TWO_SIDED = [  # (v, alpha, v_opt, bound)
    (10.0, 0.05, 100.0, 12.1907531463415), (100.0, 0.05, 100.0, 30.35208990376253),
    (1000.0, 0.05, 100.0, 102.51228683166386), (500.0, 0.01, 500.0, 79.86407405341919),
    (2000.0, 0.001, 300.0, 193.35983964633533),
]


def _mixture_value(s: float, v: float, rho: float) -> float:
    """The normal-mixture martingale at (S, V): integral of exp(l S - l^2 V / 2) over l ~ N(0, 1/rho)."""
    def f(lam: float) -> float:
        return math.exp(lam * s - lam * lam * v / 2 - rho * lam * lam / 2) * math.sqrt(rho / (2 * math.pi))
    return integrate.quad(f, -np.inf, np.inf)[0]


@pytest.mark.parametrize("v,alpha,rho", [(10.0, 0.05, 2.0), (400.0, 0.05, 30.0), (2500.0, 0.001, 80.0)])
def test_boundary_is_where_the_mixture_martingale_reaches_one_over_alpha(v, alpha, rho):
    """Ville's inequality: P(sup M_t >= 1/alpha) <= alpha, so the boundary is exactly M = 1/alpha."""
    b = float(mixture_boundary(v, alpha, rho))
    assert _mixture_value(b, v, rho) == pytest.approx(1 / alpha, rel=1e-6)
    assert _mixture_value(0.9 * b, v, rho) < 1 / alpha


@pytest.mark.parametrize("v,alpha,v_opt,expected", CONFSEQ_TWO_SIDED)
def test_boundary_matches_confseq(v, alpha, v_opt, expected):
    assert float(mixture_boundary(v, alpha, mixture_rho(v_opt, alpha))) == pytest.approx(expected, rel=1e-9)


def test_rho_makes_the_boundary_nearly_tightest_at_v_opt():
    v_opt, alpha = 400.0, 0.05
    best = float(mixture_boundary(v_opt, alpha, mixture_rho(v_opt, alpha)))
    others = [float(mixture_boundary(v_opt, alpha, mixture_rho(v_opt * f, alpha))) for f in (0.2, 0.5, 2, 5)]
    assert best <= min(others) * 1.001


def test_the_running_variance_is_clustereds_two_way_variance_at_the_estimate_after_every_vote():
    rng = np.random.default_rng(3)
    n = 600
    prompt, rater = rng.integers(0, 40, n), rng.integers(0, 25, n)
    a = (rng.random(n) < 0.6).astype(float)
    d = (rng.random(n) < 0.8).astype(float)
    clustering = Clustering(prompt, rater)
    path = score_path(a, d, clustering, 0.45)
    for t in (50, 200, len(path.s) - 1):
        rows = path.row[: t + 1]
        est = a[rows].sum() / d[rows].sum()
        assert path.estimate[t] == pytest.approx(est)
        assert path.s[t] == pytest.approx((a[rows] - 0.45 * d[rows]).sum())
        v, _df, g_p, g_r = sum_variance(a[rows] - est * d[rows], Clustering(prompt[rows], rater[rows]))
        assert path.v[t] == pytest.approx(v, rel=1e-9)
        assert (path.prompts[t], path.raters[t]) == (g_p, g_r)


def test_fixed_sample_size_is_the_textbook_one_sample_normal_size():
    """n = p(1-p) ((z_{1-a/2} + z_power) / delta)^2; statsmodels' NormalIndPower solves the same with effect size
    delta / sqrt(p (1 - p)) and ratio 0 (one sample)."""
    n = fixed_sample_decided(0.5, 0.45, alpha=0.05, power=0.8)
    es = 0.05 / math.sqrt(0.25)
    expected = NormalIndPower().solve_power(effect_size=es, alpha=0.05, power=0.8, ratio=0, alternative="two-sided")
    assert n == pytest.approx(expected, rel=1e-3)
    assert n == pytest.approx(785, abs=1)


def _study(rng: np.random.Generator, n_votes: int, share: float, *, prompt_sd: float = 0.7, n_prompts: int = 60,
           per_session: int = 10) -> pd.DataFrame:
    """One criterion's votes in arrival order with prompt and rater effects; the population share is ``share``."""
    raters = np.repeat(np.arange(n_votes // per_session + 1), per_session)[:n_votes]
    prompt = rng.integers(0, n_prompts, n_votes)
    effect = rng.normal(0, prompt_sd, n_prompts)[prompt]
    # the intercept whose mean over prompts of expit(b + effect) is the share (Gauss-Hermite quadrature)
    x, w = np.polynomial.hermite_e.hermegauss(40)
    b = brentq(lambda g: float(np.sum(w * expit(g + prompt_sd * x)) / w.sum()) - share, -10, 10)
    win = rng.random(n_votes) < expit(b + effect)
    tie = rng.random(n_votes) < 0.2
    winner = np.where(tie, "tie", np.where(win, "model_a", "model_b"))
    return pd.DataFrame({"criterion": "q", "model_a": "fast", "model_b": "slow", "winner": winner,
                         "prompt": prompt, "evaluator": raters, "vote_id": np.arange(n_votes)})


Q = Question("q", "fast", "slow", "non_inferiority", 0.45)


def test_a_clear_effect_is_decided_early_and_a_clear_deficit_is_called_inferior():
    rng = np.random.default_rng(0)
    design = plan_design(alpha=0.05, power=0.8, assumed=0.5, threshold=0.45, n_questions=1)
    good = decide(_study(rng, 1500, 0.68), Q, alpha=design.alpha_early, rho=design.rho, assumed=0.5)
    assert good.decision == "non-inferior" and good.decided_at is not None and good.decided_at < 1500
    assert good.cs is not None and good.cs[0] > 0.45
    bad = decide(_study(rng, 1500, 0.25), Q, alpha=design.alpha_early, rho=design.rho, assumed=0.5)
    assert bad.decision == "inferior" and bad.cs is not None and bad.cs[1] < 0.45
    early = decide(_study(rng, 1500, 0.68).iloc[:60], Q, alpha=design.alpha_early, rho=design.rho, assumed=0.5)
    assert early.decision == "not yet" and not early.ready and early.notes  # too few raters to trust a variance


def test_continuous_peeking_keeps_the_error_where_naive_repeated_testing_does_not():
    """At the margin, with prompt clustering and a look after every vote: the sequence's false decision (either
    'non-inferior' or 'inferior', the share being exactly the margin) stays at most alpha; the clustered
    fixed-sample z test at the same alpha repeated after every vote (stop at the first p < alpha) is wrong several
    times as often (Armitage, McPherson & Rowe 1969)."""
    rng = np.random.default_rng(7)
    alpha, reps, n = 0.05, 150, 1200
    rho = mixture_rho(300 * 0.25, alpha)
    z = 1.959964
    seq = naive = 0
    for _ in range(reps):
        f = _study(rng, n, 0.45)
        a = (f["winner"] == "model_a").to_numpy(float)
        d = (f["winner"] != "tie").to_numpy(float)
        path = score_path(a, d, Clustering(f["prompt"].to_numpy(), f["evaluator"].to_numpy()), 0.45)
        ready = (path.prompts >= 20) & (path.raters >= 10) & np.isfinite(path.v)
        v = np.nan_to_num(path.v)
        seq += bool(np.any(ready & (path.s != 0) & (path.s ** 2 >= mixture_boundary(v, alpha, rho) ** 2)))
        naive += bool(np.any(ready & (path.s != 0) & (v > 0) & (path.s ** 2 >= z * z * v)))
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert seq / reps <= alpha + 2 * se
    # the same bar fails for watching the p-value (measured: sequence 5 of 150, naive 40 of 150)
    assert naive / reps > alpha + 2 * se and naive >= 2 * max(seq, 1)


def test_the_study_can_stop_when_every_criterion_is_decided_or_the_budget_is_spent():
    rng = np.random.default_rng(11)
    a = _study(rng, 900, 0.75)
    b = _study(rng, 900, 0.72).assign(criterion="r")
    frame = pd.concat([a, b])
    questions = [Q, Question("r", "fast", "slow", "non_inferiority", 0.45)]
    done = study_decisions(frame, questions, alpha=0.05, power=0.8, budget=5000)
    assert done["can_stop"] and done["reason"] == "every planned criterion is decided"
    assert [r["decision"] for r in done["criteria"]] == ["non-inferior", "non-inferior"]

    # about even: the sequence stays open, then the budget is spent and the final clustered test decides
    even = pd.concat([_study(rng, 900, 0.52), _study(rng, 900, 0.5).assign(criterion="r")])
    open_ = study_decisions(even.iloc[:0].pipe(lambda e: pd.concat([even[even.vote_id < 300]])), questions,
                            alpha=0.05, power=0.8, budget=800)
    assert not open_["can_stop"] and all(r["decision"] == "not yet" for r in open_["criteria"])
    assert all(r["expected_more"] is None or r["expected_more"] > 0 for r in open_["criteria"])
    spent = study_decisions(even, questions, alpha=0.05, power=0.8, budget=800)
    assert spent["can_stop"] and "budget" in spent["reason"]
    assert all(r["decided"] and r["stage"] in ("sequence", "final") for r in spent["criteria"])
    final = [r for r in spent["criteria"] if r["stage"] == "final"]
    assert final and all(r["final"]["decision"] in ("non-inferior", "inferior", "inconclusive") for r in final)
    # the final test never sees votes past the budget
    assert all(r["n_votes"] <= 800 for r in spent["criteria"])


def test_ties_rule_half_counts_a_tie_as_half_a_win():
    frame = pd.DataFrame({"criterion": "q", "model_a": "slow", "model_b": "fast",
                          "winner": ["model_b", "tie", "tie", "model_a"], "prompt": [1, 2, 3, 4],
                          "evaluator": [1, 2, 3, 4]})
    half = decide(frame, Q, alpha=0.05, rho=10.0, ties="half")
    drop = decide(frame, Q, alpha=0.05, rho=10.0, ties="drop")
    assert half.estimate == pytest.approx(0.5) and half.n_decided == 4
    assert drop.estimate == pytest.approx(0.5) and drop.n_decided == 2
