"""Votes to plan: how many a criterion needs to detect the smallest effect worth knowing, and how to buy them.

``plan_votes`` is what the dashboard shows. It plans on a stated smallest effect of interest
(``SMALLEST_EFFECT``, a preference share of 60%), not on the observed effect: power at the observed effect
(Hoenig & Heisey 2001, "The abuse of power") says a study of two equal models needs a few thousand more votes,
after which it is no more likely to be significant. The independent-votes count from the exact sign test below
is inflated by the design effect measured on the study's own votes (``app.stats.clustered``), written as
intra-class correlations by prompt and by rater: V = s^2 [(1 - rho_p - rho_r)/N + rho_p/G_p + rho_r/G_r] for N
decided votes over G_p prompts and G_r raters (the variance of a mean under crossed random effects, e.g.
Snijders & Bosker 2012, ch. 11). The same formula says which of more prompts, more raters or more votes per
prompt and rater shrinks the interval fastest, and when no number of votes on the current prompts and raters
can reach the target.

Exact sign-test sample size (used for the independent-votes count):

Method: exact search. For n decided votes the sign test at level alpha rejects when the number of wins k
satisfies k <= c or k >= n - c, with c the largest integer such that 2 * P(Bin(n, 1/2) <= c) <= alpha
(the binomial under 1/2 is symmetric, so this is exactly SciPy's two-sided ``binomtest`` region). Power at the
observed rate p is P(Bin(n, p) <= c) + P(Bin(n, p) >= n - c). Exact power is saw-toothed in n (Chernick &
Liu 2002), so we report the smallest n whose power reaches the target; a normal approximation
(Cohen's h, as statsmodels' ``NormalIndPower``) only picks the search
window. Beyond ``EXACT_LIMIT`` decided votes we return the normal approximation, marked as such.

Decided votes are converted to total votes with the observed tie rate. Votes are treated as independent,
so with strong clustering by prompt the real need is higher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import bdtr, bdtrc
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_effectsize

EXACT_LIMIT = 20_000  # beyond this many decided votes the exact and normal answers differ by well under 1%


def normal_votes_needed(p: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Normal-approximation n for the one-sample test of p against 1/2 with Cohen's h effect size.

    Closed form n = ((z_{1-alpha/2} + z_{power}) / h)^2, which is what statsmodels'
    ``NormalIndPower().solve_power(effect_size=h, ratio=0)`` solves numerically (checked in the tests);
    the closed form avoids its root finder, which dominated the run time.
    """
    h = abs(float(proportion_effectsize(p, 0.5)))
    return float(((norm.isf(alpha / 2) + norm.ppf(power)) / h) ** 2)


def _critical(n: np.ndarray, alpha: float) -> np.ndarray:
    """Largest c with P(Bin(n, 1/2) <= c) <= alpha/2 (-1 when even c = 0 is too likely)."""
    c = np.floor(n / 2 - norm.isf(alpha / 2) * np.sqrt(n) / 2).astype(np.int64) - 1
    c = np.clip(c, -1, None)
    # Walk to the exact boundary; the normal start is within a few steps, so this loops a handful of times.
    while True:
        up = (c + 1 < n) & (bdtr(c + 1, n, 0.5) <= alpha / 2)
        if not up.any():
            break
        c = c + up
    while True:
        down = (c >= 0) & (bdtr(np.maximum(c, 0), n, 0.5) > alpha / 2)
        if not down.any():
            break
        c = c - down
    return c


def exact_power(n: np.ndarray | int, p: float, *, alpha: float = 0.05) -> np.ndarray:
    """Power of the exact two-sided sign test with n decided votes when the true rate is p."""
    n = np.atleast_1d(np.asarray(n, dtype=np.int64))
    c = _critical(n, alpha)
    safe = np.maximum(c, 0)
    reject_low = np.where(c >= 0, bdtr(safe, n, p), 0.0)
    reject_high = np.where(c >= 0, bdtrc(n - safe - 1, n, p), 0.0)
    return reject_low + reject_high


def decided_votes_needed(p: float, *, alpha: float = 0.05, power: float = 0.8) -> tuple[int | None, str]:
    """Smallest number of decided (non-tie) votes giving ``power`` at true rate p; (None, reason) if no effect."""
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        return None, "no decided votes"
    if p == 0.5:
        return None, "no observed effect"
    approx = normal_votes_needed(p, alpha=alpha, power=power)
    if approx > EXACT_LIMIT:
        return int(math.ceil(approx)), "normal approximation"
    lo, hi = max(1, int(approx * 0.5)), int(math.ceil(approx * 1.5)) + 30
    ns = np.arange(lo, hi + 1)
    ok = np.flatnonzero(exact_power(ns, p, alpha=alpha) >= power)
    if ok.size == 0:
        return int(math.ceil(approx)), "normal approximation"
    return int(ns[ok[0]]), "exact"


def votes_needed(wins: int, losses: int, ties: int, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Total votes (ties included, at the observed tie rate) for ``power`` at the observed preference rate.

    None when there is no decided vote, no observed effect, or every vote is a tie.
    """
    decided = wins + losses
    total = decided + ties
    if decided == 0:
        return None
    n_decided, _ = decided_votes_needed(wins / decided, alpha=alpha, power=power)
    if n_decided is None:
        return None
    return int(math.ceil(n_decided * total / decided))


# The preference share worth detecting, unless the study's plan says otherwise (10 points from even).
SMALLEST_EFFECT = 0.60
LEVERS = ("more prompts", "more raters", "more votes per prompt and rater")


@dataclass(frozen=True)
class VotePlan:
    total: int | None  # votes (ties included) for the power at SMALLEST_EFFECT; None when unreachable
    icc_prompt: float | None
    icc_rater: float | None
    best_lever: str | None  # which of LEVERS shrinks the interval most for the same number of extra votes
    reachable: bool  # False: the current prompts and raters alone cannot reach the power


def _icc(deff: float, votes: int, clusters: int) -> float | None:
    """rho from a one-way design effect 1 + (m - 1) rho with m votes per cluster (None when unmeasurable)."""
    if clusters <= 0 or not math.isfinite(deff):
        return None
    m = votes / clusters
    if m <= 1:
        return None
    return float(min(max((deff - 1) / (m - 1), 0.0), 1.0))


def plan_votes(*, n: int, decided: int, ties: int, n_prompts: int, n_raters: int, deff_prompt: float,
               deff_rater: float, alpha: float = 0.05, power: float = 0.8,
               effect: float = SMALLEST_EFFECT) -> VotePlan:
    """Votes needed for ``power`` at the preference share ``effect``, with the study's measured clustering."""
    icc_p = _icc(deff_prompt, decided, n_prompts)
    icc_r = _icc(deff_rater, decided, n_raters)
    rho_p, rho_r = icc_p or 0.0, icc_r or 0.0
    tie_share = ties / n if n else 0.0
    if tie_share >= 1.0:
        return VotePlan(None, icc_p, icc_r, None, False)
    needed, _ = decided_votes_needed(effect, alpha=alpha, power=power)
    assert needed is not None  # effect != 1/2
    # Solve (1 - rho_p - rho_r)/N + rho_p/G_p + rho_r/G_r <= 1/needed for N on the current prompts and raters.
    spare = 1.0 / needed - (rho_p / n_prompts if n_prompts else 0.0) - (rho_r / n_raters if n_raters else 0.0)
    lever = _best_lever(decided, n_prompts, n_raters, rho_p, rho_r) if decided and (rho_p or rho_r) else None
    if spare <= 0:
        return VotePlan(None, icc_p, icc_r, lever, False)
    n_decided = max(1.0, (1.0 - rho_p - rho_r) / spare)
    return VotePlan(int(math.ceil(n_decided / (1.0 - tie_share))), icc_p, icc_r, lever, True)


def _best_lever(decided: int, g_p: int, g_r: int, rho_p: float, rho_r: float) -> str:
    """Which way of doubling the decided votes leaves the smallest variance (the formula in the docstring)."""
    def var(n: float, gp: float, gr: float) -> float:
        return (1 - rho_p - rho_r) / n + (rho_p / gp if gp else 0.0) + (rho_r / gr if gr else 0.0)
    options = [var(2 * decided, 2 * g_p, g_r), var(2 * decided, g_p, 2 * g_r), var(2 * decided, g_p, g_r)]
    return LEVERS[int(np.argmin(options))]
