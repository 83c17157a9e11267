import pytest

from app.stats import compute_results, synthetic_votes


def test_left_bias_is_detected():
    res = compute_results(synthetic_votes(3000, seed=3, left_bias=0.5, effect=0.0), n_boot=0)
    pb = res["position_bias"]
    assert pb["rate"] > 0.55 and pb["p_value"] < 1e-6
    assert pb["unit"] == "vote (overall decision)"
    assert set(pb["by_criterion"]) == set(res["criteria_keys"])
    assert 0.45 < pb["a_left_share"] < 0.55


def test_no_bias_counts_match():
    votes = synthetic_votes(500, seed=9)
    pb = compute_results(votes, n_boot=0)["position_bias"]["by_criterion"]["text_relevance"]
    part = votes[votes["criterion"] == "text_relevance"]
    assert pb["left_wins"] == (part["side"] == "left").sum() and pb["right_wins"] == (part["side"] == "right").sum()
    assert pb["rate"] == pytest.approx(pb["left_wins"] / pb["n"])
