"""Eq. 9 of the Chatbot Arena paper (arXiv:2403.04132) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.stats.adaptive import pair_variance, sampling_weights, vote_variance


def test_weights_match_a_hand_computed_example():
    # Gains sqrt(S/n) - sqrt(S/(n+1)):
    #   pair 1: S = 0.25, n = 1: 0.5 * (1 - 1/sqrt 2)   = 0.146447
    #   pair 2: S = 0.25, n = 4: 0.5 * (1/2 - 1/sqrt 5) = 0.026393
    #   pair 3: S = 0.09, n = 4: 0.3 * (1/2 - 1/sqrt 5) = 0.015836
    # sum 0.188676, so p = 0.77618, 0.13989, 0.08393.
    p = sampling_weights([1, 4, 4], [0.25, 0.25, 0.09])
    assert p == pytest.approx([0.77618, 0.13989, 0.08393], abs=1e-5)
    assert p.sum() == pytest.approx(1.0)


def test_more_votes_or_less_variance_means_less_weight():
    p = sampling_weights([10, 20, 10], [0.25, 0.25, 0.05])
    assert p[0] > p[1] and p[0] > p[2]
    # Doubling the variance of every pair changes nothing: only ratios matter.
    assert sampling_weights([3, 5], [0.1, 0.2]) == pytest.approx(sampling_weights([3, 5], [0.2, 0.4]))


def test_pairs_without_votes_share_the_draw():
    assert sampling_weights([0, 5, 0], [0.25, 0.25, 0.25]) == pytest.approx([0.5, 0.0, 0.5])


def test_bad_input_is_refused():
    for counts, variances in (([1, 2], [0.1]), ([], []), ([-1, 2], [0.1, 0.1]), ([1, 2], [0.1, math.nan])):
        with pytest.raises(ValueError):
            sampling_weights(counts, variances)


def test_vote_variance_follows_the_tie_rule_and_never_reaches_zero():
    # 7 wins, 1 loss, 2 ties: p = 7.5/9, decided share d = 8.5/11; p(1-p)/d = 0.179739.
    assert vote_variance(7, 1, 2) == pytest.approx(0.179739, abs=1e-6)
    # Ties cost information: the same decided votes plus ties give a larger variance per vote.
    assert vote_variance(5, 5, 10) > vote_variance(5, 5, 0)
    # One-sided votes: small but positive (the plug-in p(1-p) would be 0 and starve the pair forever).
    assert 0 < vote_variance(30, 0, 0) < 0.02
    # Several criteria add up.
    assert pair_variance([(7, 1, 2), (5, 5, 0)]) == pytest.approx(vote_variance(7, 1, 2) + vote_variance(5, 5, 0))
    assert np.isfinite(pair_variance([]))
