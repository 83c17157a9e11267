"""Both adaptive rules against hand-computed or independently computed values: Eq. 9 of the Chatbot Arena paper
(arXiv:2403.04132) and the optimal-design rule for every rating's interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.stats.adaptive import (
    counted_models,
    design_scores,
    pair_variance,
    pick_least_score,
    rating_covariance,
    rating_variances,
    sampling_weights,
    separated,
    variances_after_one_vote,
    vote_variance,
)


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


# --- the optimal-design rule ("adaptive"): every rating's variance after one more vote, and the pick -----------

PAIRS3 = np.array([(0, 1), (0, 2), (1, 2)])


def _centred_variances_by_reference(weights):
    """Independent route: fix model 0 at 0, invert the other two models' information, then centre."""
    info = np.zeros((3, 3))
    for (a, b), w in zip(PAIRS3, weights, strict=True):
        x = np.zeros(3)
        x[a], x[b] = 1.0, -1.0
        info += w * np.outer(x, x)
    cov = np.zeros((3, 3))
    cov[1:, 1:] = np.linalg.inv(info[1:, 1:])
    centre = np.eye(3) - 1.0 / 3
    return np.diag(centre @ cov @ centre)


def test_rating_covariance_matches_a_hand_computed_example():
    # Information 4, 1, 2 on pairs (0,1), (0,2), (1,2). With model 0 at 0 the other two have information
    # [[6, -2], [-2, 3]], inverse [[3, 2], [2, 6]] / 14; centring gives variances 13/126, 10/126, 19/126
    # (model 2, with the least information on its pairs, is the least certain).
    cov = rating_covariance(np.array([4.0, 1.0, 2.0]), PAIRS3, 3)
    assert np.diag(cov) == pytest.approx([13 / 126, 10 / 126, 19 / 126], abs=1e-12)
    assert cov.sum(axis=1) == pytest.approx([0, 0, 0], abs=1e-12)  # centred: the ratings sum to 0
    assert np.diag(cov) == pytest.approx(_centred_variances_by_reference([4.0, 1.0, 2.0]), abs=1e-12)


def test_variances_after_one_vote_equal_a_fresh_inverse_and_the_rule_picks_the_best_pair():
    weights = np.array([4.0, 1.0, 2.0])
    next_vote = np.array([0.25, 0.2, 0.24])  # p (1 - p) times decided share of one more vote per pair
    cov = rating_covariance(weights, PAIRS3, 3)
    after = variances_after_one_vote(cov, PAIRS3, next_vote)
    scale = np.diag(cov).max()
    brute = []
    for k in range(3):
        more = weights.copy()
        more[k] += next_vote[k]
        fresh = _centred_variances_by_reference(more)
        assert after[k] == pytest.approx(fresh, abs=1e-12)  # Sherman-Morrison = a fresh inverse
        brute.append(((fresh / scale) ** 16).sum())
    scores = design_scores(after, scale)
    assert scores == pytest.approx(brute, rel=1e-9)
    # Model 2 is the least certain (19/126), then model 0 (13/126). A vote on (0, 2) is worth less (0.2) than
    # one on (1, 2) (0.24) yet narrows model 2 more (to 17.684/126 against 17.721/126): it ties the two least
    # certain models together. Voting (0, 1) leaves model 2 at 18.98/126. So the rule picks (0, 2), index 1.
    assert after[:, 2] * 126 == pytest.approx([18.9831, 17.6842, 17.7211], abs=1e-4)
    assert int(np.argmin(brute)) == 1
    assert all(int(pick_least_score(scores, np.random.default_rng(s))) == 1 for s in range(20))


def test_near_ties_are_drawn_at_random_and_exact_symmetry_splits_evenly():
    rng = np.random.default_rng(0)
    picks = [int(pick_least_score(np.array([1.0, 1.0 + 1e-12, 2.0]), rng)) for _ in range(400)]
    assert 150 < picks.count(0) < 250 and picks.count(2) == 0


def test_fit_and_variances_from_tallies_agree_with_an_independent_fit():
    # Tallies of wins (first model, second model) and ties on (0,1), (0,2), (1,2).
    wins_a, wins_b, ties = np.array([8.0, 9.0, 6.0]), np.array([4.0, 1.0, 5.0]), np.array([2.0, 0.0, 3.0])
    now, after, theta = rating_variances(wins_a, wins_b, ties, PAIRS3, 3)
    # Independent fit: maximise the BT likelihood (one half added each way) with scipy, model 0 at 0.
    from scipy.optimize import minimize

    def nll(t):
        full = np.concatenate([[0.0], t])
        d = full[PAIRS3[:, 0]] - full[PAIRS3[:, 1]]
        return -np.sum((wins_a + 0.5) * -np.logaddexp(0, -d) + (wins_b + 0.5) * -np.logaddexp(0, d))

    t = minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    full = np.concatenate([[0.0], t])
    assert theta == pytest.approx(full - full.mean(), abs=1e-5)
    p = 1 / (1 + np.exp(-(full[PAIRS3[:, 0]] - full[PAIRS3[:, 1]])))
    assert now == pytest.approx(_centred_variances_by_reference((wins_a + wins_b + 1) * p * (1 - p)), rel=1e-5)
    # One more vote is worth p (1 - p) times the decided share (decided + 1/2) / (votes + 1).
    share = (wins_a + wins_b + 0.5) / (wins_a + wins_b + ties + 1)
    for k in range(3):
        more = (wins_a + wins_b + 1) * p * (1 - p)
        more[k] += p[k] * (1 - p[k]) * share[k]
        assert after[k] == pytest.approx(_centred_variances_by_reference(more), rel=1e-5)
    # Votes on screen count at their expected information: they lower the variances.
    pending_now, _, _ = rating_variances(wins_a, wins_b, ties, PAIRS3, 3, pending=np.array([0.0, 5.0, 0.0]))
    assert pending_now[2] < now[2] and pending_now[0] < now[0]


def test_a_model_that_never_loses_is_left_out_only_once_it_has_an_even_share():
    # (0,1), (0,2), (1,2): model 2 won all its decided votes (never lost): separated.
    wins_a, wins_b, ties = np.array([3.0, 0.0, 0.0]), np.array([2.0, 4.0, 5.0]), np.array([1.0, 1.0, 0.0])
    assert separated(wins_a, wins_b, PAIRS3, 3).tolist() == [False, False, True]
    # Model 2 has 10 of 16 votes' appearances, an even share is 2 * 16 / 3 = 10.67: still counted.
    assert counted_models(wins_a, wins_b, ties, PAIRS3, 3).tolist() == [True, True, True]
    # One more one-sided vote on (1, 2): 11 of 17 ... even share 11.33, still counted; two more: 12 >= 12.
    more = np.array([0.0, 0.0, 2.0])
    assert counted_models(wins_a, wins_b + more, ties, PAIRS3, 3).tolist() == [True, True, False]
    # Left out, the others' ratings are centred over the counted two: model 2's uncertainty does not leak in.
    now, after, _ = rating_variances(wins_a, wins_b + more, ties, PAIRS3, 3, include=np.array([True, True, False]))
    assert now[0] == pytest.approx(now[1])  # theta_0 - (theta_0 + theta_1) / 2 and its mirror image
    # Never fewer than two models counted (centred over one, a rating has variance 0).
    lopsided = np.array([0.0, 0.0, 0.0]), np.array([6.0, 6.0, 6.0]), np.zeros(3)
    assert counted_models(*lopsided, PAIRS3, 3).all()
