import numpy as np
import pytest

from app.trust.sensitivity import NO_VERDICT, Verdict, changed, influence_order, verdict_changes


def test_influence_order_tries_shared_addresses_first_then_the_most_one_sided():
    toward_a = np.array([[10, 1, 9, 4, 0], [10, 0, 1, 4, 0]])
    toward_b = np.array([[0, 1, 0, 4, 0], [0, 1, 9, 4, 0]])
    sizes = [1, 5, 1, 2, 1]  # cluster 4 has no answers: never worth a try
    assert influence_order(toward_a, toward_b, sizes, limit=10) == [1, 3, 0, 2]
    assert influence_order(toward_a, toward_b, sizes, limit=3) == [1, 3, 0]
    with pytest.raises(ValueError):
        influence_order(toward_a, toward_b, sizes[:2], limit=3)


def test_a_change_is_significance_or_a_significant_winner():
    sig_a, sig_b, ns_a = Verdict(True, "a"), Verdict(True, "b"), Verdict(False, "a")
    assert changed(sig_a, ns_a) and changed(ns_a, sig_a) and changed(sig_a, sig_b)
    assert not changed(ns_a, Verdict(False, "b")) and not changed(sig_a, Verdict(True, "a"))
    baseline = {"motion": sig_a, "overall": ns_a}
    without = {0: {"motion": sig_a, "overall": ns_a}, 7: {"motion": ns_a, "overall": ns_a}, 9: {}}
    assert verdict_changes(baseline, without) == {"motion": [(7, ns_a), (9, NO_VERDICT)], "overall": []}
