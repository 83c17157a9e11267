"""Adaptive pair selection for studies of three or more models: spend each vote where it shrinks uncertainty most.

Two rules live here; ``app.services.assignments`` calls them for a study whose QC setting ``pair_selection`` is
``"adaptive"`` (the optimal-design rule below) or ``"arena_eq9"`` (Chatbot Arena's rule).

**adaptive: sequential optimal design for every rating's interval** (``design_scores``). The quantity a study
reports for 3+ models is a Bradley-Terry rating per model with an interval; the goal is *every* model's interval
narrow. With the current fit, one more decided vote on models a and b adds ``w (e_a - e_b)(e_a - e_b)^T`` to the
Fisher information, ``w = p_ab (1 - p_ab)`` times the chance the vote is decided (ties carry no BT information,
the project's rule). For each model pair the rule computes, by a rank-one (Sherman-Morrison) update of the
ratings' covariance, every rating's variance after one more vote there, and picks the pair that minimises
``sum_i (var_i / max var)^POWER``: Kiefer's phi_p criterion on the ratings' variances, which approaches
"minimise the largest variance" as POWER grows. This is the sequential (Wynn-Fedorov) construction of an optimal
design: Fedorov (1972), *Theory of Optimal Experiments*, ch. 4; Kiefer (1974), "General equivalence theory for
optimum designs (approximate theory)", Ann. Statist. 2, 849-879, for the phi_p family; for the Bradley-Terry model
in particular, Grasshoff and Schwabe (2008), "Optimal design for the Bradley-Terry paired comparison model",
Statistical Methods and Applications 17, 275-289. Why a power and not the largest variance itself: greedy
one-step minimisation of a maximum is myopic: run at the true strengths of bench/adaptive.py's scenarios (a
one-off check, not kept) it ended 4% and 7% worse than a uniform design with all-close and with 12 spread
models, where phi_16 ended 1% and 38% better; the smooth criterion converges to the optimal design.

**arena_eq9: Chatbot Arena's active sampling rule** (Chiang et al. 2024, "Chatbot Arena: An Open Platform for
Evaluating LLMs by Human Preference", ICML, arXiv:2403.04132, Section 5, Eq. 9): draw the model pair ``a`` with
probability

    p_a  proportional to  sqrt(Sigma_a / n_a) - sqrt(Sigma_a / (n_a + 1)),

the drop in the standard error of pair ``a``'s win-rate estimate that one more vote on ``a`` buys. ``n_a`` is the
number of votes pair ``a`` has (here: votes plus votes on screen, so that evaluators rating at the same moment do
not all pile onto one pair) and ``Sigma_a`` the variance of one vote's contribution to the pair's win rate. It
targets the win matrix, not the ratings (measured: it costs votes on every rating's interval).

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
# The design rule's exponent of Kiefer's phi_p on the ratings' variances (see the module text). 16 is close to
# "the largest variance" (a variance 5% below the largest weighs 44% of it) yet smooth enough for the greedy
# construction to converge; in the one-off check of the module text 16 beat 1, 4 and the maximum everywhere
# but 5 models with one far ahead, where the maximum did 2% better.
POWER = 16  # design_scores squares four times: change both together
# Pseudo-votes, one half each way, added to every model pair before the fit (as the bench's and the add-one-half
# rule of app.stats.ratings): the fit and its information exist from the first vote, and a one-sided pair does
# not send a strength to infinity.
PRIOR = 0.5


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


def design_matrix(pairs: np.ndarray, n_models: int) -> np.ndarray:
    """Rows ``e_a - e_b``, one per model pair (a, b) of ``pairs`` (P, 2)."""
    x = np.zeros((len(pairs), n_models))
    x[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    x[np.arange(len(pairs)), pairs[:, 1]] = -1.0
    return x


def _laplacian(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_k w_k x_k x_k^T`` for weights (..., P) and rows x (P, K): (..., K, K), by matrix products."""
    return np.asarray(np.swapaxes(x, 0, 1) @ (weights[..., :, None] * x))


def fit_strengths(wins_a: np.ndarray, wins_b: np.ndarray, pairs: np.ndarray, n_models: int,
                  theta: np.ndarray | None = None, *, max_iter: int = 50, tol: float = 1e-8) -> np.ndarray:
    """Bradley-Terry strengths (natural log-odds, mean 0), shape (..., M), from decided votes per model pair.

    ``wins_a`` / ``wins_b`` (..., P): wins of each pair's first / second model; ``PRIOR`` is added to each.
    ``theta`` (..., M): a warm start (the bench refits after every vote). Newton's method with model 0 held at
    0, then centred; with the prior every pair has votes both ways, so the fit always exists.
    """
    s = np.asarray(wins_a, dtype=float) + PRIOR
    n = s + np.asarray(wins_b, dtype=float) + PRIOR
    free = design_matrix(pairs, n_models)[:, 1:]
    t = np.zeros(s.shape[:-1] + (n_models - 1,)) if theta is None else theta[..., 1:] - theta[..., :1]
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(t @ free.T)))
        grad = (s - n * p) @ free
        info = _laplacian(n * p * (1 - p), free)
        step = np.clip(np.linalg.solve(info, grad[..., None])[..., 0], -2.0, 2.0)
        t = t + step
        if np.abs(step).max(initial=0.0) < tol:
            break
    full = np.concatenate([np.zeros(t.shape[:-1] + (1,)), t], axis=-1)
    return np.asarray(full - full.mean(axis=-1, keepdims=True))


def vote_weights(theta: np.ndarray, pairs: np.ndarray, decided: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """Expected Fisher information of one more vote on each pair, (..., P): ``p (1 - p)`` at the fit, times
    the pair's decided share (shrunk by one half, as ``vote_variance``; a tie carries no BT information)."""
    p = 1.0 / (1.0 + np.exp(-(theta[..., pairs[:, 0]] - theta[..., pairs[:, 1]])))
    share = (np.asarray(decided, dtype=float) + 0.5) / (np.asarray(votes, dtype=float) + 1.0)
    return np.asarray(p * (1 - p) * share)


def rating_covariance(info_weights: np.ndarray, pairs: np.ndarray, n_models: int) -> np.ndarray:
    """Covariance (..., M, M) of the centred ratings for the information ``sum_k w_k x_k x_k^T``.

    The information is a graph Laplacian, singular along the all-ones vector (only differences of strengths are
    identified); the centred ratings' covariance is its pseudo-inverse, ``inv(L + J/M) - J/M`` with J all ones
    (exact when the pairs connect every model, which the prior guarantees)."""
    lap = _laplacian(np.asarray(info_weights, dtype=float), design_matrix(pairs, n_models))
    ones = np.full((n_models, n_models), 1.0 / n_models)
    return np.asarray(np.linalg.inv(lap + ones) - ones)


def variances_after_one_vote(cov: np.ndarray, pairs: np.ndarray, weights: np.ndarray,
                             contrast: np.ndarray | None = None) -> np.ndarray:
    """Every rating's variance after one more vote on each pair, (..., P, M), by Sherman-Morrison.

    Adding ``w x x^T`` (x = e_a - e_b, orthogonal to the all-ones vector) to the information changes the
    covariance S by ``- w (S x)(S x)^T / (1 + w x^T S x)``; only the diagonal is needed. ``contrast`` (..., M, M):
    rows c_i, the variance reported for model i is that of ``c_i . theta`` (default: the centred ratings)."""
    u = cov[..., :, pairs[:, 0]] - cov[..., :, pairs[:, 1]]  # (..., M, P): S x per pair
    q = u[..., pairs[:, 0], np.arange(len(pairs))] - u[..., pairs[:, 1], np.arange(len(pairs))]  # x^T S x
    if contrast is not None:
        u = contrast @ u
        cov = contrast @ cov @ np.swapaxes(contrast, -1, -2)
    diag = np.diagonal(cov, axis1=-2, axis2=-1)  # (..., M)
    drop = weights[..., None, :] * u**2 / (1.0 + weights * q)[..., None, :]  # (..., M, P)
    return np.asarray(np.swapaxes(diag[..., :, None] - drop, -1, -2))


def separated(wins_a: np.ndarray, wins_b: np.ndarray, pairs: np.ndarray, n_models: int) -> np.ndarray:
    """Models (..., M) that never lost, or never won, any decided vote (and have some): their Bradley-Terry
    strength has no finite estimate (``app.stats.ratings.separation``) and their interval stays open-ended
    however the votes are spent, until the first loss (or win) arrives."""
    wins_a, wins_b = np.asarray(wins_a, dtype=float), np.asarray(wins_b, dtype=float)
    won = np.zeros(wins_a.shape[:-1] + (n_models,))
    lost = np.zeros_like(won)
    for k, (a, b) in enumerate(pairs):
        won[..., a] += wins_a[..., k]
        lost[..., a] += wins_b[..., k]
        won[..., b] += wins_b[..., k]
        lost[..., b] += wins_a[..., k]
    return np.asarray((won + lost > 0) & ((won == 0) | (lost == 0)))


def counted_models(wins_a: np.ndarray, wins_b: np.ndarray, ties: np.ndarray, pairs: np.ndarray,
                   n_models: int) -> np.ndarray:
    """The models (..., M) whose intervals the design rule narrows: all but the ``separated`` ones that already
    have at least an even share of the votes (2 votes / M of every vote; all models where that leaves fewer
    than two).

    Why: a separated model's Wald variance, held up by the prior alone, is the largest, and one more one-sided
    vote shrinks it a little, forever: counted, a model that beats everyone every time draws nearly every vote
    to its pairs (measured: 95% with 4 models, tests/bench). Left out as soon as it is separated, a strong
    model that merely has not lost *yet* never gets the votes that would show its first loss, and its interval
    never narrows (measured: 45% of studies unmet). With an even share it is treated as least-voted would.
    Ratings are then centred over the counted models, so its variance does not leak into theirs via the mean."""
    votes = np.asarray(wins_a, dtype=float) + np.asarray(wins_b, dtype=float) + np.asarray(ties, dtype=float)
    per_model = np.zeros(votes.shape[:-1] + (n_models,))
    for k, (a, b) in enumerate(pairs):
        per_model[..., a] += votes[..., k]
        per_model[..., b] += votes[..., k]
    even_share = 2.0 * votes.sum(axis=-1, keepdims=True) / n_models
    keep = ~(separated(wins_a, wins_b, pairs, n_models) & (per_model >= even_share))
    # Ratings centred over one model are all 0: fewer than two counted, count them all.
    return np.asarray(np.where(keep.sum(axis=-1, keepdims=True) >= 2, keep, True))


def design_scores(var_after: np.ndarray, scale: np.ndarray | float, include: np.ndarray | None = None) -> np.ndarray:
    """Kiefer's phi_p criterion (lower is better) per candidate pair: ``sum_i (var_i / scale)^POWER`` over the
    models (last axis of ``var_after`` (..., P, M)). ``scale``: the current largest variance, broadcast to (...),
    so the powers stay near 1 (sums over several criteria are then comparable). ``include`` (..., M): the models
    counted (``counted_models``)."""
    ratio = var_after / np.maximum(np.asarray(scale, dtype=float), 1e-300)[..., None, None]
    if include is not None:  # before the power: a left-out model's ratio may overflow, and inf * 0 is nan
        ratio = np.where(np.asarray(include, dtype=bool)[..., None, :], ratio, 0.0)
    powered = ratio * ratio  # ratio ** 16 by squaring: a float power is several times slower (the bench's cost)
    for _ in range(3):
        powered *= powered
    return np.asarray(powered.sum(axis=-1))


def pick_least_score(scores: np.ndarray, rng: np.random.Generator, *, rel_tol: float = 1e-9) -> np.ndarray:
    """Index of the lowest score along the last axis; pairs within ``rel_tol`` of it (e.g. by symmetry of the
    design) are drawn among at random."""
    best = scores.min(axis=-1, keepdims=True)
    near = scores <= best * (1 + rel_tol) + 1e-300
    noise = rng.random(scores.shape) * near
    return np.asarray(np.argmax(noise, axis=-1))


def rating_variances(wins_a: np.ndarray, wins_b: np.ndarray, ties: np.ndarray, pairs: np.ndarray, n_models: int,
                     *, pending: np.ndarray | None = None, theta: np.ndarray | None = None,
                     include: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The design rule's inputs from the tallies (..., P) of each model pair (a, b) of ``pairs``.

    Returns (every rating's variance now (..., M), after one more vote on each pair (..., P, M), the fit
    (..., M)). ``theta``: a fit to use as it is (the app and the bench refit now and then, not on every vote);
    None: fitted here. The information counts each pair's decided votes plus ``2 PRIOR`` at the fitted ``p (1 - p)``
    (the Wald information of the fit), and ``pending`` votes (on screen, not yet in) at their expected weight,
    so that evaluators rating at the same moment are not all sent to the same pair. ``include`` (..., M): the
    ratings are centred over these models (``counted_models``); None: over all."""
    wins_a, wins_b, ties = (np.asarray(a, dtype=float) for a in (wins_a, wins_b, ties))
    if theta is None:
        theta = fit_strengths(wins_a, wins_b, pairs, n_models)
    decided = wins_a + wins_b
    weight = vote_weights(theta, pairs, decided, decided + ties)
    p = 1.0 / (1.0 + np.exp(-(theta[..., pairs[:, 0]] - theta[..., pairs[:, 1]])))
    info = (decided + 2 * PRIOR) * p * (1 - p)
    if pending is not None:
        info = info + np.asarray(pending, dtype=float) * weight
    cov = rating_covariance(info, pairs, n_models)
    if include is None:
        return np.diagonal(cov, axis1=-2, axis2=-1).copy(), variances_after_one_vote(cov, pairs, weight), theta
    # Rows e_i - (the mean over the included models): the ratings centred over those.
    share = np.asarray(include, dtype=float)
    contrast = np.eye(n_models) - (share / share.sum(axis=-1, keepdims=True))[..., None, :]
    after = variances_after_one_vote(cov, pairs, weight, contrast)
    now = np.diagonal(contrast @ cov @ np.swapaxes(contrast, -1, -2), axis1=-2, axis2=-1).copy()
    return now, after, theta
