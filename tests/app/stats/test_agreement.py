import krippendorff
import numpy as np
import pandas as pd
import pytest

from app.stats.agreement import (
    agreement_by_criterion,
    alpha_from_long,
    krippendorff_alpha,
    observed_and_chance_agreement,
)

NA = np.nan
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", example C: 4 observers x 12 units.
C_DATA = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NA, NA, NA],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NA, 3],
    [NA, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NA],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NA],
]


def test_krippendorff_example_c_nominal():
    assert round(krippendorff_alpha(C_DATA), 3) == 0.743
    assert krippendorff_alpha(C_DATA) == pytest.approx(0.7434, abs=5e-5)


def test_long_form_and_value_counts_give_the_same_alpha():
    rows = [
        (obs, unit, v)
        for obs, vals in zip("ABCD", C_DATA, strict=True)
        for unit, v in enumerate(vals)
        if not np.isnan(v)
    ]
    frame = pd.DataFrame(rows, columns=["observer", "unit", "value"])
    assert alpha_from_long(frame, unit="unit", observer="observer", value="value") == pytest.approx(0.7434, abs=5e-5)


def _long_c(shuffle_seed):
    rows = [(obs, unit, v) for obs, vals in zip("ABCD", C_DATA, strict=True) for unit, v in enumerate(vals)
            if not np.isnan(v)]
    return pd.DataFrame(rows, columns=["observer", "unit", "value"]).sample(frac=1, random_state=shuffle_seed)


def test_ordered_levels_do_not_depend_on_the_order_of_rows():
    # Krippendorff (2011) example C: ordinal 0.815, interval 0.849, ratio 0.797 (the krippendorff package's
    # doctests). Shuffled, the values first appear as 1, 5, 2, 4, 3: ordering by appearance gave 0.774.
    frame = _long_c(3)
    assert list(pd.unique(frame["value"])) == [1, 5, 2, 4, 3]
    for level, published in (("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)):
        got = alpha_from_long(frame, unit="unit", observer="observer", value="value", level=level)
        assert round(got, 3) == published, level
        assert got == pytest.approx(krippendorff.alpha(reliability_data=C_DATA, level_of_measurement=level))
    labels = {1: "very low", 2: "low", 3: "mid", 4: "high", 5: "very high"}
    named = frame.assign(value=frame["value"].map(labels))
    got = alpha_from_long(named, unit="unit", observer="observer", value="value", level="ordinal",
                          order=list(labels.values()))
    assert round(got, 3) == 0.815


def test_undefined_alpha_is_none():
    assert krippendorff_alpha([[1, 1, 1], [1, 1, 1]]) is None  # no variation at all
    assert krippendorff_alpha([[1, NA], [NA, 2]]) is None  # no unit judged twice


def _votes(winners_by_unit):
    rows = []
    for u, winners in enumerate(winners_by_unit):
        for e, w in enumerate(winners):
            rows.append({"criterion": "c", "prompt": f"p{u}", "model_a": "A", "model_b": "B", "evaluator": f"e{e}",
                         "winner": w})
    return pd.DataFrame(rows)


def test_agreement_in_model_space():
    perfect = _votes([["model_a"] * 3, ["model_b"] * 3, ["tie"] * 2])
    got = agreement_by_criterion(perfect, ["c"])["c"]
    assert got["alpha"] == got["alpha_ordinal"] == got["pairwise_agreement"] == 1.0
    assert (got["n_units"], got["n_judgements"]) == (3, 8)
    # Each unit split evenly: worse than chance.
    split = _votes([["model_a", "model_b"], ["model_b", "model_a"], ["model_a", "model_b"]])
    assert agreement_by_criterion(split, ["c"])["c"]["alpha"] < 0


def test_last_judgement_counts_when_an_evaluator_changes_their_mind():
    final = _votes([["model_b", "model_b"], ["model_a", "model_b"], ["tie", "tie"]])
    earlier = final.iloc[[0]].assign(winner="model_a")  # e0 first said model_a on p0, then model_b
    got = agreement_by_criterion(pd.concat([earlier, final], ignore_index=True), ["c"])["c"]
    assert got == agreement_by_criterion(final, ["c"])["c"]
    assert got["n_judgements"] == 6


def test_dense_and_sorted_last_rows_agree(monkeypatch):
    import app.stats.agreement as agreement

    key = np.random.default_rng(0).integers(0, 50, 500)
    distinct, last = agreement._last_rows(key)
    monkeypatch.setattr(agreement, "_DENSE_MAX", 0)
    sorted_distinct, sorted_last = agreement._last_rows(key)
    assert np.array_equal(distinct, sorted_distinct) and np.array_equal(last, sorted_last)
    assert np.array_equal(distinct, np.unique(key)) and np.array_equal(key[last], distinct)
    assert all(k not in key[i + 1:] for k, i in zip(distinct, last, strict=True))  # each is its key's last row


def _reference_alphas(winners_by_unit):
    """Nominal and ordinal alpha from an evaluators x units matrix coded model_a=0 < tie=1 < model_b=2."""
    code = {"model_a": 0, "tie": 1, "model_b": 2}
    width = max(len(w) for w in winners_by_unit)
    data = np.full((width, len(winners_by_unit)), np.nan)
    for u, winners in enumerate(winners_by_unit):
        for e, w in enumerate(winners):
            data[e, u] = code[w]
    return tuple(krippendorff.alpha(reliability_data=data, level_of_measurement=lvl) for lvl in ("nominal", "ordinal"))


def test_ordinal_alpha_counts_a_tie_as_between_the_two_preferences():
    # Evaluators who share a preference and differ only in whether it is clear enough: A against tie.
    units = [["model_a", "model_a", "tie"], ["model_a", "tie", "tie"], ["model_b", "model_b", "tie"],
             ["model_b", "tie", "model_b"], ["model_a", "model_a", "model_a"], ["tie", "model_b", "model_b"],
             ["model_b", "model_a", "model_b"]]
    got = agreement_by_criterion(_votes(units), ["c"])["c"]
    nominal, ordinal = _reference_alphas(units)
    assert got["alpha"] == pytest.approx(nominal) and got["alpha_ordinal"] == pytest.approx(ordinal)
    assert got["alpha_ordinal"] > got["alpha"] + 0.1
    # and the order is model space's, whatever order the values first appear in
    reordered = agreement_by_criterion(_votes(units[::-1]), ["c"])["c"]
    assert reordered["alpha_ordinal"] == pytest.approx(ordinal)


def test_high_raw_agreement_with_alpha_near_zero_when_almost_every_vote_goes_one_way():
    # 30 pairs judged three times; 85 of 90 judgements say model_b, five lone dissents on five pairs.
    units = [["model_b"] * 3] * 25 + [["model_a", "model_b", "model_b"]] * 5
    got = agreement_by_criterion(_votes(units), ["c"])["c"]
    assert got["pairwise_agreement"] == pytest.approx(80 / 90)  # 25 x 3 judgements agree fully, 5 x 1 of 3
    assert got["chance_agreement"] == pytest.approx((85 * 84 + 5 * 4) / (90 * 89))
    assert abs(got["alpha"]) < 0.1  # alpha says "no agreement beyond chance"; raters agreed on 89% of pairs
    observed, chance = got["pairwise_agreement"], got["chance_agreement"]
    assert got["alpha"] == pytest.approx((observed - chance) / (1 - chance))  # alpha's own decomposition


def test_observed_agreement_on_example_c_is_alphas():
    values = np.array([v for row in C_DATA for v in row if not np.isnan(v)])
    units = np.array([u for row in C_DATA for u, v in enumerate(row) if not np.isnan(v)])
    counts = np.zeros((12, 5))
    np.add.at(counts, (units, values.astype(int) - 1), 1)
    observed, chance = observed_and_chance_agreement(counts)
    assert (observed - chance) / (1 - chance) == pytest.approx(0.7434, abs=5e-5)
