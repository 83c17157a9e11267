"""Votes needed for 80% power at the observed effect, for the exact two-sided sign test.

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
