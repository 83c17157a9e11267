"""Confidence intervals for a binomial proportion.

Scalar intervals go through ``scipy.stats.binomtest(...).proportion_ci`` so every method SciPy knows
('exact' = Clopper-Pearson, 'wilson', 'wilsoncc') is available by name; the vectorised Wilson interval used
for whole tables goes through ``statsmodels.stats.proportion.proportion_confint`` (same formula, arrays in).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import binomtest
from statsmodels.stats.proportion import proportion_confint

METHODS = ("wilson", "exact", "wilsoncc")


def proportion_ci(successes: int, n: int, *, method: str = "wilson", confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided interval for successes/n; ``method`` is SciPy's: 'wilson' (default here), 'exact', 'wilsoncc'.

    Returns (nan, nan) when n is 0: there is nothing to estimate.
    """
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}; use one of {', '.join(METHODS)}")
    successes, n = int(successes), int(n)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method=method)
    return (float(ci.low), float(ci.high))


def wilson_interval(successes: ArrayLike, n: ArrayLike, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised Wilson score interval; entries with n == 0 come back as nan."""
    successes = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    safe_n = np.where(n > 0, n, 1.0)
    lo, hi = proportion_confint(successes, safe_n, alpha=1 - confidence, method="wilson")
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
