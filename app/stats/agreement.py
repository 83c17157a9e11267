"""Agreement between evaluators: Krippendorff's alpha (nominal and ordinal) and raw agreement, in model space.

Alpha is computed by the ``krippendorff`` package (Castro 2017, implementing Krippendorff 2011, "Computing
Krippendorff's alpha-reliability"). For votes, a unit is one item that several evaluators judged on one
criterion -- the pair (``pair_id`` when the frame has it, else prompt x model pair) -- and the value is the
winner in model space, so "left" on one screen and "right" on another agree when they pick the same model.
Alpha only needs, per unit, how many evaluators gave each value, so we pass those counts (``value_counts``)
instead of an evaluators x units matrix; it is the same statistic and stays small with many evaluators.

What alpha measures: ``alpha = (A_o - A_e) / (1 - A_e)``, observed agreement against the agreement expected
by chance from how often each value was used overall. It asks whether evaluators agree about how the *pairs
differ from each other* (this pair clearly A, that one a tie), not whether they agree about which model is
better: when nearly every judgement goes to one model, chance agreement is already near 1 and alpha is near 0
even though raters agreed on almost every pair. So three figures are reported per criterion:

- ``alpha``: nominal alpha (model_a / tie / model_b as unordered categories), kept for compatibility;
- ``alpha_ordinal``: ordinal alpha on the fixed order model_a < tie < model_b (a tie lies between the two
  preferences, so "A" against "tie" is a smaller disagreement than "A" against "B");
- ``pairwise_agreement``: the observed agreement ``A_o``, the share of agreeing pairs among the pairs of
  judgements of the same unit (each judgement weighing equally, as in alpha); ``chance_agreement`` is ``A_e``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import krippendorff
import numpy as np
import numpy.typing as npt
import pandas as pd
from numpy.typing import ArrayLike

from app.stats.frame import WINNERS, codes, group_codes

# The levels of measurement the krippendorff package knows.
Level = Literal["nominal", "ordinal", "interval", "ratio"]
# The winner in model space on an ordered scale: A better < indistinguishable < B better. A fixed order, never
# the order in which values happen to appear.
ORDERED_WINNERS = ("model_a", "tie", "model_b")
_ORDINAL_COLUMNS = [WINNERS.index(v) for v in ORDERED_WINNERS]  # WINNERS-ordered counts -> ordered counts


def krippendorff_alpha(
    reliability_data: ArrayLike | None = None,
    *,
    value_counts: ArrayLike | None = None,
    level: Level = "nominal",
    value_domain: ArrayLike | None = None,
) -> float | None:
    """Alpha from an observers x units matrix (nan = missing) or a units x values count matrix.

    ``value_domain``: the values the count columns stand for, in their order (the order matters for ordinal,
    the values themselves for interval and ratio alpha); by default the columns are 0, 1, 2, ...

    Returns None when alpha is undefined: no unit was judged by two observers, or every judgement has the
    same value (no disagreement is possible, so expected disagreement is 0).
    """
    if (reliability_data is None) == (value_counts is None):
        raise ValueError("pass exactly one of reliability_data and value_counts")
    if value_counts is not None:
        vc = np.asarray(value_counts, dtype=float)
        vc = vc[vc.sum(axis=1) >= 2]  # units judged once carry no information on agreement
        if vc.size == 0 or np.count_nonzero(vc.sum(axis=0)) < 2:
            return None
        value = krippendorff.alpha(value_counts=vc, value_domain=value_domain, level_of_measurement=level)
    else:
        data = np.asarray(reliability_data, dtype=float)
        present = ~np.isnan(data)
        pairable = present.sum(axis=0) >= 2
        if not pairable.any() or np.unique(data[:, pairable][present[:, pairable]]).size < 2:
            return None
        value = krippendorff.alpha(reliability_data=data, value_domain=value_domain, level_of_measurement=level)
    value = float(value)
    return None if math.isnan(value) else value


def _value_order(values: pd.Series, level: Level, order: Sequence[Any] | None) -> list[Any] | None:
    """The order of the values for a non-nominal level: as given, the model-space order for winners, else sorted."""
    if order is not None:
        return list(order)
    if level == "nominal":
        return None
    present = [v for v in pd.unique(values) if not pd.isna(v)]
    if set(present) <= set(WINNERS):
        return list(ORDERED_WINNERS)
    return sorted(present)


def alpha_from_long(
    frame: pd.DataFrame,
    *,
    unit: str | list[str],
    observer: str,
    value: str,
    level: Level = "nominal",
    order: Sequence[Any] | None = None,
) -> float | None:
    """Alpha from one row per (observer, unit) judgement; ``unit`` is a column name or a list of them.

    For ordinal, interval and ratio alpha the values are ordered by ``order`` when given, else model_a < tie <
    model_b for winners, else sorted (numbers by size) -- never by first appearance, which would change alpha
    with the order of the rows. Interval and ratio alpha use the values themselves as the distances' scale.

    An observer who judged the same unit more than once keeps only the last judgement, as alpha assumes one
    value per observer and unit; rows without a value are left out.
    """
    units = [unit] if isinstance(unit, str) else list(unit)
    frame = frame[frame[value].notna()].drop_duplicates(subset=[*units, observer], keep="last")
    if frame.empty:
        return None
    u_codes = frame.groupby(units, sort=False, dropna=False).ngroup().to_numpy()
    ordered = _value_order(frame[value], level, order)
    domain: list[Any] | None = None
    if ordered is None:
        v_codes, v_uniques = pd.factorize(frame[value])
        n_values = len(v_uniques)
    else:
        v_codes = pd.Categorical(frame[value], categories=ordered).codes.astype(np.int64)
        if (v_codes < 0).any():
            unknown = sorted({str(v) for v in frame[value][v_codes < 0]})[:3]
            raise ValueError(f"values {', '.join(unknown)} are not in the given order")
        n_values = len(ordered)
        domain = ordered if level in ("interval", "ratio") else None
    counts = np.zeros((u_codes.max() + 1, n_values))
    np.add.at(counts, (u_codes, v_codes), 1)
    return krippendorff_alpha(value_counts=counts, level=level, value_domain=domain)


def observed_and_chance_agreement(value_counts: ArrayLike) -> tuple[float | None, float | None]:
    """(A_o, A_e) of nominal alpha from a units x values count matrix (units judged once are left out).

    A_o, the observed agreement, is the share of agreeing pairs among the pairs of judgements of one unit,
    each judgement weighing equally (a unit's pairs weigh 1 / (m_u - 1), as in alpha); A_e is the agreement
    expected from the values' overall frequencies. Nominal alpha = (A_o - A_e) / (1 - A_e).
    """
    vc = np.asarray(value_counts, dtype=float)
    vc = vc[vc.sum(axis=1) >= 2]
    if vc.size == 0:
        return None, None
    m_u = vc.sum(axis=1)
    n = m_u.sum()
    observed = float(((vc * (vc - 1)).sum(axis=1) / (m_u - 1)).sum() / n)
    n_v = vc.sum(axis=0)
    chance = float((n_v * (n_v - 1)).sum() / (n * (n - 1)))
    return observed, chance


def unit_columns(votes: pd.DataFrame) -> list[str]:
    """The columns identifying a judged item: pair_id if present, else prompt and the model pair."""
    if "pair_id" in votes.columns:
        return ["pair_id"]
    return ["prompt", "model_a", "model_b"]


# The last row of each (criterion, unit, evaluator) key is found with a dense array over the key space while
# that space is at most this many times the number of rows (and under _DENSE_MAX); sparser keys are sorted.
_DENSE_PER_ROW = 8
_DENSE_MAX = 64_000_000


def _last_rows(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(every distinct ``key`` (non-negative ints), ascending; the position of its last row).

    A dense ``np.maximum.at`` over the key space is several times faster than sorting millions of keys.
    """
    if key.size and int(key.max()) < min(_DENSE_MAX, _DENSE_PER_ROW * key.size + 1024):
        dtype = np.int32 if key.size < 2**31 else np.int64  # half the memory traffic
        last: npt.NDArray[np.signedinteger[Any]] = np.full(int(key.max()) + 1, -1, dtype=dtype)
        np.maximum.at(last, key, np.arange(key.size, dtype=dtype))
        present = np.flatnonzero(last >= 0)
        return present, last[present]
    distinct, first_from_end = np.unique(key[::-1], return_index=True)
    return distinct, key.size - 1 - first_from_end


def _codes_without_copy(series: pd.Series) -> np.ndarray:
    """Category codes as stored (-1 = missing); other columns are factorised."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.cat.codes.to_numpy()
    return pd.factorize(series)[0]


def agreement_by_criterion(votes: pd.DataFrame, criteria: list[str]) -> dict[str, dict[str, Any]]:
    """{criterion: {"alpha", "alpha_ordinal", "pairwise_agreement", "chance_agreement", "n_units",
    "n_judgements"}} over units judged by at least two evaluators (see the module docstring).

    Works on integer codes: one pass finds each evaluator's last judgement per criterion and unit, then one
    ``bincount`` gives every criterion's units x (model_a, model_b, tie) count matrix for ``krippendorff_alpha``.
    """
    units = unit_columns(votes)
    empty: dict[str, Any] = {"alpha": None, "alpha_ordinal": None, "pairwise_agreement": None,
                             "chance_agreement": None, "n_units": 0, "n_judgements": 0}
    if "evaluator" not in votes.columns or any(c not in votes.columns for c in units) or votes.empty:
        return {c: dict(empty) for c in criteria}
    # criteria numbered among those present (an "overall" frame has one): a denser key
    crit, crit_keys = group_codes(votes, ["criterion"])
    unit, unit_keys = group_codes(votes, units)
    ev = _codes_without_copy(votes["evaluator"])
    w = codes(votes["winner"], WINNERS)
    n_crit, n_units, n_ev = len(crit_keys), len(unit_keys), int(ev.max(initial=-1)) + 2
    # (unit, evaluator, criterion) key, built in place in the smallest integer type that holds it
    key: npt.NDArray[np.signedinteger[Any]] = unit.astype(np.int32 if n_units * n_ev * n_crit < 2**31 else np.int64)
    key *= n_ev
    key += ev
    key += 1
    key *= n_crit
    key += crit
    # Each evaluator's last judgement of a unit on a criterion; unit and criterion are read back from the key
    # (in order) rather than gathered from millions of scattered rows.
    key, last = _last_rows(key)
    value = w[last]
    valid = value >= 0  # a judgement with no valid winner has no value to agree on
    key, value = key[valid], value[valid]
    cell = key // (n_ev * n_crit)  # the unit
    cell += (key % n_crit) * n_units  # criterion x units
    cell *= 3
    cell += value
    counts = np.bincount(cell, minlength=n_crit * n_units * 3).reshape(n_crit, n_units, 3)
    crit_names = crit_keys["criterion"].tolist()
    out: dict[str, dict[str, Any]] = {}
    for criterion in criteria:
        if criterion not in crit_names:
            out[criterion] = dict(empty)
            continue
        per_unit = counts[crit_names.index(criterion)]
        multi = per_unit[per_unit.sum(axis=1) >= 2]
        observed, chance = observed_and_chance_agreement(multi)
        out[criterion] = {
            "alpha": krippendorff_alpha(value_counts=multi) if len(multi) else None,
            "alpha_ordinal": (krippendorff_alpha(value_counts=multi[:, _ORDINAL_COLUMNS], level="ordinal")
                              if len(multi) else None),
            "pairwise_agreement": observed,
            "chance_agreement": chance,
            "n_units": int(len(multi)),
            "n_judgements": int(multi.sum()),
        }
    return out
