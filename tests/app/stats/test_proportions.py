import math

import pytest
from scipy.stats import binomtest

from app.stats.proportions import proportion_ci, wilson_interval


def test_exact_interval_reproduces_scipy_documentation_example():
    # scipy.stats.binomtest docs: binomtest(k=7, n=50, p=0.1).proportion_ci() -> (0.05819170, 0.26739600)
    lo, hi = proportion_ci(7, 50, method="exact")
    assert (round(lo, 4), round(hi, 4)) == (0.0582, 0.2674)
    ref = binomtest(k=7, n=50, p=0.1).proportion_ci()
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_60_of_100():
    lo, hi = proportion_ci(60, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.5020, 0.6906)
    vlo, vhi = wilson_interval([60], [100])
    assert (vlo[0], vhi[0]) == pytest.approx((lo, hi), abs=1e-12)


def test_no_votes_gives_nan_and_bad_input_is_rejected():
    assert all(math.isnan(x) for x in proportion_ci(0, 0))
    lo, hi = wilson_interval([0, 5], [0, 10])
    assert math.isnan(lo[0]) and not math.isnan(lo[1])
    with pytest.raises(ValueError, match="unknown interval method"):
        proportion_ci(1, 2, method="agresti")
    with pytest.raises(ValueError, match="successes <= n"):
        proportion_ci(3, 2)
