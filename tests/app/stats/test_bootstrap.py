import numpy as np

from app.stats.bootstrap import cluster_bootstrap_rate, cluster_weights, iid_bootstrap_rate


def test_clustered_prompts_widen_the_interval():
    # 40 prompts x 10 decided votes each, overall rate 0.6.
    homogeneous = np.full((40, 1), 6.0)
    clustered = np.r_[np.full((24, 1), 10.0), np.zeros((16, 1))]  # whole prompts go one way
    trials = np.full((40, 1), 10.0)
    lo_h, hi_h = cluster_bootstrap_rate(homogeneous, trials, n_boot=500, seed=1)
    lo_c, hi_c = cluster_bootstrap_rate(clustered, trials, n_boot=500, seed=1)
    assert lo_h[0] == hi_h[0] == 0.6  # no between-prompt variation at all
    assert lo_c[0] < 0.5 < 0.6 < hi_c[0]


def test_seeded_and_cells_without_trials():
    s = np.array([[3.0, 0.0], [1.0, 0.0], [4.0, 0.0]])
    t = np.array([[5.0, 0.0], [2.0, 0.0], [5.0, 0.0]])
    a = cluster_bootstrap_rate(s, t, n_boot=200, seed=7)
    b = cluster_bootstrap_rate(s, t, n_boot=200, seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.isnan(a[0][1]) and np.isnan(a[1][1])


def test_strata_keep_their_sizes():
    strata = np.array([0, 0, 0, 1, 1])
    w = cluster_weights(5, 100, np.random.default_rng(0), strata=strata)
    assert (w[:, :3].sum(axis=1) == 3).all() and (w[:, 3:].sum(axis=1) == 2).all()


def test_iid_bootstrap_brackets_the_rate():
    lo, hi = iid_bootstrap_rate([60], [40], [20], n_boot=2000, seed=0)
    assert lo[0] < 0.6 < hi[0]
    assert 0.48 < lo[0] < 0.53 and 0.67 < hi[0] < 0.72  # about the Wilson interval (0.502, 0.691)
