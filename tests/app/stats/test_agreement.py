import numpy as np
import pandas as pd
import pytest

from app.stats.agreement import agreement_by_criterion, alpha_from_long, krippendorff_alpha

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
    assert agreement_by_criterion(perfect, ["c"])["c"] == {"alpha": 1.0, "n_units": 3, "n_judgements": 8}
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
