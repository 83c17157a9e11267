"""Adaptive pair selection for studies of three or more models: spend each vote where it shrinks uncertainty most.

The rule is Chatbot Arena's active sampling rule (Chiang et al. 2024, "Chatbot Arena: An Open Platform for
Evaluating LLMs by Human Preference", ICML, arXiv:2403.04132, Section 5, Eq. 9): draw the model pair ``a`` with
probability

    p_a  proportional to  sqrt(Sigma_a / n_a) - sqrt(Sigma_a / (n_a + 1)),

the drop in the standard error of pair ``a``'s win-rate estimate that one more vote on ``a`` buys. ``n_a`` is the
number of votes pair ``a`` has (here: votes plus votes on screen, so that evaluators rating at the same moment do
not all pile onto one pair) and ``Sigma_a`` the variance of one vote's contribution to the pair's win rate.

Where this differs from the paper, and why:
- The paper's ``Sigma`` is the covariance of its inverse-probability-weighted estimator (Eq. 5). BlindPair
  estimates a pair's win rate by the plain mean of that pair's votes, whose variance is ``Sigma_a / n_a`` with
  ``Sigma_a`` the variance of one vote on ``a``; Eq. 9 is then literally "the interval shrinks by this much".
- Ties follow the project's rule (``app.stats.ratings``): the win rate is wins / (wins + losses), so a vote is
  informative only when decided. With decided share ``d`` and win rate ``p`` one vote's variance is
  ``p (1 - p) / d``: a pair that is often tied needs more votes for the same interval.
- ``p`` and ``d`` are shrunk by one half (Jeffreys' Beta(1/2, 1/2) prior, as in ``app.stats.ratings``' add-one-half
  rule): the plug-in ``p (1 - p)`` is 0 after a few one-sided votes and would never sample that pair again.
- A study asks several criteria; every criterion's interval should shrink, so ``Sigma_a`` is the sum of the
  criteria's variances (the trace of the pair's covariance over criteria).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Below this many votes on some model pair there is no information to weigh: choose least-voted first.
MIN_VOTES_PER_PAIR = 4


def vote_variance(wins: Any, losses: Any, ties: Any) -> Any:
    """One vote's variance for a pair's win rate (wins / decided), shrunk by one half; see the module text.

    Numbers or numpy arrays (elementwise)."""
    decided = wins + losses
    n = decided + ties
    p = (wins + 0.5) / (decided + 1.0)
    d = (decided + 0.5) / (n + 1.0)
    return p * (1.0 - p) / d


def pair_variance(tallies: Sequence[tuple[float, float, float]]) -> float:
    """``Sigma_a`` of one model pair: the sum over criteria of ``vote_variance(wins, losses, ties)``."""
    return float(sum(vote_variance(*t) for t in tallies))


def eq9_gain(counts: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """Elementwise ``sqrt(Sigma / n) - sqrt(Sigma / (n + 1))`` for n > 0 (any shape; the bench draws for many
    simulated studies at once with it)."""
    n = np.asarray(counts, dtype=float)
    sigma = np.asarray(variances, dtype=float)
    return np.asarray(np.sqrt(sigma / n) - np.sqrt(sigma / (n + 1.0)))


def sampling_weights(counts: Sequence[float] | np.ndarray, variances: Sequence[float] | np.ndarray) -> np.ndarray:
    """Eq. 9 of arXiv:2403.04132: probabilities, one per model pair, of drawing it for the next vote.

    ``counts`` n_a and ``variances`` Sigma_a per model pair. A pair with no votes yet has an unbounded weight: all
    such pairs share the probability equally (the paper's rule in the limit; the caller normally picks
    least-voted first instead while any pair has fewer than ``MIN_VOTES_PER_PAIR``).
    """
    n = np.asarray(counts, dtype=float)
    sigma = np.asarray(variances, dtype=float)
    if n.shape != sigma.shape or n.ndim != 1 or not len(n):
        raise ValueError("counts and variances must be two equally long, non-empty lists")
    if (n < 0).any() or (sigma < 0).any() or not np.isfinite(n).all() or not np.isfinite(sigma).all():
        raise ValueError("counts and variances must be finite and not negative")
    empty = n == 0
    if empty.any():
        return empty / empty.sum()
    gain = eq9_gain(n, sigma)
    total = gain.sum()
    if total <= 0:  # every variance 0 (cannot happen with the shrunk variance): nothing to prefer
        return np.full(len(n), 1.0 / len(n))
    return np.asarray(gain / total)
