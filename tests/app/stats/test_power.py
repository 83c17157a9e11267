import numpy as np
import pytest
from scipy.stats import binom, binomtest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from app.stats.power import decided_votes_needed, exact_power, normal_votes_needed, votes_needed


@pytest.mark.parametrize("n", [1, 5, 6, 10, 17, 50, 123])
@pytest.mark.parametrize("p", [0.55, 0.6, 0.8, 0.3])
def test_exact_power_matches_enumerating_binomtest(n, p):
    ks = np.arange(n + 1)
    reject = np.array([binomtest(int(k), n).pvalue <= 0.05 for k in ks])
    assert exact_power(n, p)[0] == pytest.approx(binom.pmf(ks[reject], n, p).sum(), abs=1e-12)


def test_normal_approximation_is_statsmodels_one_sample_power():
    h = abs(proportion_effectsize(0.6, 0.5))
    ref = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=0)
    # statsmodels also counts the (negligible) far tail, hence the loose tolerance.
    assert normal_votes_needed(0.6) == pytest.approx(ref, rel=1e-5)


def test_exact_search_returns_first_n_reaching_80_percent():
    n, how = decided_votes_needed(0.6)
    assert how == "exact"
    assert exact_power(n, 0.6)[0] >= 0.8
    assert (exact_power(np.arange(1, n), 0.6) < 0.8).all()
    assert decided_votes_needed(0.5) == (None, "no observed effect")
    assert decided_votes_needed(0.4)[0] == n  # symmetric


def test_votes_needed_adds_ties_at_observed_rate():
    n, _ = decided_votes_needed(0.6)
    assert votes_needed(60, 40, 25) == int(np.ceil(n * 125 / 100))
    assert votes_needed(0, 0, 10) is None
