"""Sign test on non-tie votes and multiplicity adjustment.

Ties are dropped before the test (they are not split in half): the exact two-sided binomial test of
wins among decided votes against 1/2 (``scipy.stats.binomtest``), as the classical sign test does.
Adjustment uses ``statsmodels.stats.multitest.multipletests`` ('holm' across criteria, 'fdr_bh' across
theme x criterion cells).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import bdtr
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

_METHODS = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "bonferroni": "bonferroni"}


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided p-value that wins/(wins+losses) differs from 1/2; nan when there are no decided votes."""
    wins, losses = int(wins), int(losses)
    if wins + losses == 0:
        return math.nan
    return float(binomtest(wins, wins + losses, p=0.5, alternative="two-sided").pvalue)


def sign_tests(wins: ArrayLike, losses: ArrayLike) -> np.ndarray:
    """``sign_test`` over arrays, vectorised.

    Under p = 1/2 the binomial is symmetric, so SciPy's two-sided p-value (the probability of outcomes no more
    likely than the observed one) is min(1, 2 * P(X <= min(k, n - k))); the tests check it against binomtest.
    """
    wins = np.asarray(wins, dtype=np.int64)
    losses = np.asarray(losses, dtype=np.int64)
    n = wins + losses
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2.0 * bdtr(np.minimum(wins, losses), n, 0.5))
    return np.where(n > 0, p, np.nan)


def adjust_pvalues(pvalues: ArrayLike, method: str = "holm") -> np.ndarray:
    """Adjusted p-values; nan entries (untestable cells) stay nan and are not counted in the family."""
    if method not in _METHODS:
        raise ValueError(f"unknown adjustment {method!r}; use one of {', '.join(_METHODS)}")
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = _holm(p[ok]) if method == "holm" else multipletests(p[ok], method=_METHODS[method])[1]
    return out


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjustment.

    Written out because statsmodels' ``multipletests(method='holm')`` calls ``gc.collect()`` on every call,
    which costs 0.1-0.4 s once a large vote frame is in memory; the tests check this against it.
    """
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(m, 0, -1)))
    out = np.empty(m)
    out[order] = adjusted
    return out
