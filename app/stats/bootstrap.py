"""Percentile bootstrap intervals for a preference rate, resampling prompts (cluster bootstrap).

Votes on one prompt share the clips and so are not independent; resampling whole prompts keeps that
dependence (Davison & Hinkley 1997, sec. 3.8). The work is vectorised: votes are first aggregated to
per-prompt counts (clusters x cells), then each replicate is a vector of multinomial prompt weights, so a
replicate costs one matrix product whatever the number of votes.
"""

from __future__ import annotations

import warnings

import numpy as np

# Keep one block of replicate weights under ~8M floats (64 MB); larger designs are processed in chunks.
_MAX_BLOCK = 8_000_000


def cluster_weights(
    n_clusters: int, n_boot: int, rng: np.random.Generator, *, strata: np.ndarray | None = None
) -> np.ndarray:
    """(n_boot, n_clusters) resampling counts: each row is a with-replacement draw of clusters.

    With ``strata`` (one label per cluster) the draw is made within each stratum, keeping its size fixed.
    """
    if n_clusters == 0:
        return np.zeros((n_boot, 0))
    if strata is None:
        return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot).astype(float)
    strata = np.asarray(strata)
    w = np.zeros((n_boot, n_clusters))
    for label in np.unique(strata):
        idx = np.flatnonzero(strata == label)
        w[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_boot)
    return w


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - confidence) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan cells (no decided votes) are expected
        lo, hi = np.nanpercentile(samples, [tail, 100 - tail], axis=0) if samples.size else (samples, samples)
    return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)


def cluster_bootstrap_rate(
    successes: np.ndarray,
    trials: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    strata: np.ndarray | None = None,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of sum(successes)/sum(trials) per cell, resampling clusters (rows).

    ``successes`` and ``trials`` are (n_clusters, n_cells) count matrices (for a preference rate: wins of
    model A and decided votes, per prompt and criterion). Replicates where a cell has no trials are skipped
    for that cell; a cell with no trials at all gets nan.
    """
    successes = np.atleast_2d(np.asarray(successes, dtype=float))
    trials = np.atleast_2d(np.asarray(trials, dtype=float))
    if successes.shape != trials.shape:
        raise ValueError("successes and trials must have the same shape (clusters x cells)")
    n_clusters, n_cells = successes.shape
    if n_boot <= 0 or n_cells == 0:
        return np.full(n_cells, np.nan), np.full(n_cells, np.nan)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _MAX_BLOCK // max(n_clusters, 1)))
    rates = np.empty((n_boot, n_cells))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        w = cluster_weights(n_clusters, stop - start, rng, strata=strata)
        s, t = w @ successes, w @ trials
        with np.errstate(invalid="ignore", divide="ignore"):
            rates[start:stop] = np.where(t > 0, s / np.where(t > 0, t, 1), np.nan)
    return _percentiles(rates, confidence)


def iid_bootstrap_rate(
    successes: np.ndarray,
    failures: np.ndarray,
    ties: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval when votes are independent (no prompt to cluster on, e.g. external arena logs).

    Resampling n votes with replacement is a multinomial draw over the observed outcome counts, so each
    cell is drawn directly from Multinomial(n, observed shares) instead of materialising the votes.
    """
    s = np.asarray(successes, dtype=np.int64).ravel()
    f = np.asarray(failures, dtype=np.int64).ravel()
    t = np.zeros_like(s) if ties is None else np.asarray(ties, dtype=np.int64).ravel()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    lo, hi = np.full(s.size, np.nan), np.full(s.size, np.nan)
    for i in range(s.size):
        n = s[i] + f[i] + t[i]
        if n == 0 or n_boot <= 0:
            continue
        draws = rng.multinomial(n, np.array([s[i], f[i], t[i]]) / n, size=n_boot)
        decided = draws[:, 0] + draws[:, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(decided > 0, draws[:, 0] / np.where(decided > 0, decided, 1), np.nan)
        cell_lo, cell_hi = _percentiles(rate[:, None], confidence)
        lo[i], hi[i] = cell_lo[0], cell_hi[0]
    return lo, hi
