import math

import numpy as np
import pytest

from app.stats.significance import adjust_pvalues, sign_test, sign_tests


def test_sign_test_exact_value():
    # 9 wins of 10: two-sided p = 2 * (C(10,9) + C(10,10)) / 2^10 = 22/1024
    assert sign_test(9, 1) == pytest.approx(22 / 1024)
    assert sign_test(5, 5) == pytest.approx(1.0)
    assert math.isnan(sign_test(0, 0))


def test_vectorised_sign_tests_equal_binomtest():
    wins, losses = np.meshgrid(np.arange(0, 40), np.arange(0, 40))
    got = sign_tests(wins.ravel(), losses.ravel())
    ref = [sign_test(w, m) for w, m in zip(wins.ravel(), losses.ravel(), strict=True)]
    np.testing.assert_allclose(got, ref, rtol=1e-9, equal_nan=True)
    assert sign_tests([5000], [5300])[0] == pytest.approx(sign_test(5000, 5300), rel=1e-9)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    got = adjust_pvalues([0.01, 0.04, 0.03, 0.005], "holm")
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])


def test_holm_agrees_with_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(0).uniform(0, 0.2, 40)
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), multipletests(p, method="holm")[1])


def test_bh_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4/1, 4/2, 4/3, 4/4 -> 0.02, 0.02, 0.04, 0.04 (running min from the top)
    got = adjust_pvalues([0.01, 0.04, 0.03, 0.005], "bh")
    np.testing.assert_allclose(got, [0.02, 0.04, 0.04, 0.02])


def test_nan_cells_are_not_in_the_family():
    got = adjust_pvalues([0.01, float("nan"), 0.04], "holm")
    np.testing.assert_allclose(got[[0, 2]], [0.02, 0.04])
    assert math.isnan(got[1])
    with pytest.raises(ValueError, match="unknown adjustment"):
        adjust_pvalues([0.1], "sidak-ish")
