"""Checks and normalises a vote frame (the contract in the team brief) before any statistic is computed.

Required columns: criterion, model_a, model_b, winner ('model_a' | 'model_b' | 'tie'). Everything else
(vote_id, evaluator, prompt, theme, detail, left_model, side, flagged, ...) is optional: the analyses that
need a missing column are skipped, so an external arena log can be analysed with the same code.

Text columns are turned into pandas categoricals once, here: on a million rows every later comparison,
group-by and count then works on small integer codes instead of strings (about 5x faster end to end).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from app.criteria import DEFAULT_CRITERIA

REQUIRED = ("criterion", "model_a", "model_b", "winner")
WINNERS = ("model_a", "model_b", "tie")
SIDES = ("left", "right", "tie")
# FastChat's clean_battle spells a tie where both answers were bad as 'tie (bothbad)'; for preference it is a tie.
_WINNER_ALIASES = {"tie (bothbad)": "tie"}
_TEXT = ("criterion", "prompt", "theme", "detail", "evaluator")
# Below this many rows a thread pool costs more than it saves.
_PARALLEL_ROWS = 200_000


class VoteFrameError(ValueError):
    """The vote frame does not have the shape the statistics need; the message says what to fix."""


def codes(series: pd.Series, categories: Iterable[Any]) -> np.ndarray:
    """Index of each value in ``categories`` (-1 for anything else), fast for categorical columns."""
    categories = list(categories)
    if isinstance(series.dtype, pd.CategoricalDtype):
        lookup = np.array([categories.index(c) if c in categories else -1 for c in series.cat.categories] + [-1])
        return lookup[series.cat.codes.to_numpy()]  # code -1 (missing) picks the trailing -1
    return pd.Categorical(series, categories=categories).codes.astype(np.int64)


def _categorical(series: pd.Series) -> pd.Series:
    """``series.astype("category")`` (categories sorted), with one hashing pass for Arrow-backed strings.

    pandas' own conversion of Arrow strings factorises, then re-codes every row through an index lookup of
    the sorted categories; encoding with pyarrow and sorting only the dictionary gives the same categorical
    with one pass less over the rows: about 10% less CPU (1.00 s instead of 1.13 s for the ten text columns
    of a million votes). Hashing the strings is the rest, and is the same either way.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series
    if not isinstance(series.array, pd.arrays.ArrowStringArray):
        return series.astype("category")
    arrow = pa.array(series.array)
    if isinstance(arrow, pa.ChunkedArray):  # e.g. after a concat; chunks would each get their own dictionary
        arrow = arrow.combine_chunks()
    encoded = pc.dictionary_encode(arrow)
    values = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    order = np.argsort(values, kind="stable")  # the order astype("category") gives: Python's str order
    rank = np.empty(len(order) + 1, dtype=np.min_scalar_type(-len(order) - 1))  # the codes' final dtype
    rank[order] = np.arange(len(order))
    rank[-1] = -1  # missing values (null indices, filled with -1 below) stay missing
    codes = rank[encoded.indices.fill_null(-1).to_numpy()]
    categories = pd.Index(values[order], dtype=series.dtype)
    return pd.Series(pd.Categorical.from_codes(codes, categories=categories), index=series.index, name=series.name)


def _categoricals(columns: dict[str, pd.Series]) -> dict[str, pd.Series]:
    """``_categorical`` of every column; for large frames in threads, one per core.

    Hashing the strings is most of the work and pyarrow's kernels release the GIL, so on a million votes (ten
    text columns of six million rows) two idle cores took 0.7 s instead of 1.2 s; on a busy machine it is
    no slower than one thread.
    """
    workers = min(len(columns), os.cpu_count() or 1)
    if workers < 2 or len(next(iter(columns.values()))) < _PARALLEL_ROWS:
        return {c: _categorical(s) for c, s in columns.items()}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(columns, pool.map(_categorical, columns.values()), strict=True))


def check_votes(votes: pd.DataFrame) -> pd.DataFrame:
    """Validate and return a shallow copy with categorical text columns and ``winner`` normalised
    (tie aliases folded into 'tie'); model_a, model_b and left_model share one category list."""
    if not isinstance(votes, pd.DataFrame):
        raise VoteFrameError(f"expected a pandas DataFrame of votes, got {type(votes).__name__}")
    missing = [c for c in REQUIRED if c not in votes.columns]
    if missing:
        raise VoteFrameError(f"vote frame lacks column(s) {', '.join(missing)}; see the vote-frame contract")
    out = votes.copy(deep=False)
    model_cols = [c for c in ("model_a", "model_b", "left_model") if c in out.columns]
    text = [c for c in ("winner", *model_cols, *_TEXT, "side") if c in out.columns]
    cat = _categoricals({c: out[c].astype(str) if c in model_cols and out[c].dtype == object else out[c]
                         for c in text})
    winner = cat["winner"]
    names = [_WINNER_ALIASES.get(str(c), str(c)) for c in winner.cat.categories]
    bad = [c for c, n in zip(winner.cat.categories, names, strict=True) if n not in WINNERS]
    if bad or winner.isna().any():
        examples = ", ".join(repr(v) for v in (bad[:3] or ["<missing>"]))
        raise VoteFrameError(f"winner must be one of {', '.join(WINNERS)}; found {examples}")
    lookup = np.array([WINNERS.index(n) for n in names], dtype=np.int8)
    out["winner"] = pd.Categorical.from_codes(lookup[winner.cat.codes.to_numpy()], categories=WINNERS)
    all_models = sorted({str(m) for c in model_cols for m in cat[c].cat.categories})
    for c in model_cols:
        out[c] = cat[c].cat.rename_categories(lambda x: str(x)).cat.set_categories(all_models)
    for c in _TEXT:
        if c in out.columns:
            out[c] = cat[c]
    if "side" in out.columns:
        side = codes(cat["side"], SIDES)
        if (side < 0).any():
            raise VoteFrameError(f"side must be one of {', '.join(SIDES)}; fix or drop the column")
        out["side"] = pd.Categorical.from_codes(side, categories=SIDES)
    return out


def in_list(series: pd.Series, values: Iterable[Any]) -> np.ndarray:
    """``series.isin(values)`` as a numpy array, by category code for categoricals (no hashing of rows)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        wanted = set(values)
        hit = np.array([c in wanted for c in series.cat.categories] + [False])  # code -1 (missing): False
        return hit[series.cat.codes.to_numpy()]
    return series.isin(values).to_numpy()


def same_value(left: pd.Series, right: pd.Series) -> np.ndarray:
    """Elementwise left == right, on codes when both are categoricals over the same categories."""
    if (
        isinstance(left.dtype, pd.CategoricalDtype)
        and isinstance(right.dtype, pd.CategoricalDtype)
        and list(left.cat.categories) == list(right.cat.categories)
    ):
        lc, rc = left.cat.codes.to_numpy(), right.cat.codes.to_numpy()
        return (lc == rc) & (lc >= 0)
    return left.astype(object).to_numpy() == right.astype(object).to_numpy()


def criteria_order(votes: pd.DataFrame, criteria: list[str] | None = None) -> list[str]:
    """The criteria to analyse: as given, else the defaults' order first and any others as they appear."""
    crit = votes["criterion"]
    if isinstance(crit.dtype, pd.CategoricalDtype):  # unique codes, in order of appearance: no object copy
        names = np.array([*crit.cat.categories.astype(object), np.nan], dtype=object)
        present = [str(c) for c in names[pd.unique(crit.cat.codes.to_numpy())]]
    else:
        present = [str(c) for c in pd.unique(crit.astype(object))]
    if criteria is not None:
        unknown = [c for c in criteria if c not in present]
        if unknown and len(votes):
            raise VoteFrameError(f"no votes for criterion/criteria {', '.join(unknown)}; present: {', '.join(present)}")
        return list(criteria)
    default = [c.key for c in DEFAULT_CRITERIA]
    return [c for c in default if c in present] + [c for c in present if c not in default]


def _value_counts(series: pd.Series) -> pd.Series:
    """Rows per value (``value_counts``); for a categorical one ``bincount`` of its codes, every category listed."""
    if not isinstance(series.dtype, pd.CategoricalDtype):
        return series.value_counts()
    code = series.cat.codes.to_numpy()
    code = code[code >= 0] if code.size and code.min() < 0 else code
    return pd.Series(np.bincount(code, minlength=len(series.cat.categories)), index=series.cat.categories)


def model_order(votes: pd.DataFrame) -> list[str]:
    """Models ordered by how often they are model_a (the study's lower position), then by name.

    In a BlindPair study model_a is always the model with the lower position, so this recovers the study's
    order; for external logs it is a stable, documented order.
    """
    a = _value_counts(votes["model_a"])
    b = _value_counts(votes["model_b"])
    counts = pd.concat([a.rename("a"), b.rename("b")], axis=1).fillna(0)
    counts = counts[(counts["a"] + counts["b"]) > 0]
    share_a = counts["a"] / (counts["a"] + counts["b"])
    return sorted((str(m) for m in counts.index), key=lambda m: (-share_a[m], m))


def _over(series: pd.Series, categories: list[Any], code: np.ndarray | None) -> pd.Series | pd.Categorical:
    """The column as a categorical over exactly ``categories`` (``code``: its codes there, if known)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype) and not dtype.ordered and list(dtype.categories) == list(categories):
        return series  # already so: no recoding of millions of rows
    return pd.Categorical.from_codes(codes(series, categories) if code is None else code, categories=categories)


def orient_pairs(votes: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Make model_a the earlier model of ``models`` in every row, swapping the winner with it.

    The model columns come back as categoricals with ``models`` as their categories, in that order.
    """
    ra, rb = codes(votes["model_a"], models), codes(votes["model_b"], models)
    out = votes.copy(deep=False)
    swap = ra > rb
    if not swap.any():  # already oriented (a BlindPair study always is): only the categories may change
        out["model_a"], out["model_b"] = _over(votes["model_a"], models, ra), _over(votes["model_b"], models, rb)
    else:
        out["model_a"] = pd.Categorical.from_codes(np.where(swap, rb, ra), categories=models)
        out["model_b"] = pd.Categorical.from_codes(np.where(swap, ra, rb), categories=models)
    if "left_model" in out.columns:
        out["left_model"] = _over(out["left_model"], models, None)
    if swap.any():
        w = codes(out["winner"], WINNERS)
        out["winner"] = pd.Categorical.from_codes(np.where(swap, np.array([1, 0, 2])[w], w), categories=WINNERS)
    return out


def column_codes(series: pd.Series) -> tuple[np.ndarray, list]:
    """(codes, categories) of a column; missing values get -1."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.cat.codes.to_numpy().astype(np.int64), list(series.cat.categories)
    values, uniques = pd.factorize(series, sort=True)
    return values.astype(np.int64), list(uniques)


def _small_codes(series: pd.Series) -> tuple[np.ndarray, list]:
    """Like ``column_codes`` but a categorical's codes stay in their own (small) dtype, uncopied."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.cat.codes.to_numpy(), list(series.cat.categories)
    return column_codes(series)


# Largest key space numbered with a dense bincount (40 MB of counts); beyond it keys are renumbered first.
_DENSE_CELLS = 5_000_000


def _renumber(key: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct keys, ascending; each row's index among them), for keys in [0, span)."""
    if span > _DENSE_CELLS:
        return np.unique(key, return_inverse=True)
    present = np.flatnonzero(np.bincount(key, minlength=span))
    lookup = np.full(span, -1, dtype=np.int32 if present.size < 2**31 else np.int64)
    lookup[present] = np.arange(present.size)
    return present, lookup[key]


def _cells(frame: pd.DataFrame, cols: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[list]]:
    """(cell of every row, per column the code + 1 of every cell (0 = missing), categories per column).

    Cells are the combinations that occur, numbered in category order, from a mixed-radix key over the
    codes. When the key space would outgrow ``_DENSE_CELLS`` (many prompts x models x themes ...), the key so
    far is renumbered over the combinations that occur, which keeps it small and cannot overflow; the
    renumbering keeps the order, so the cells are the same.
    """
    parts = [_small_codes(frame[c]) for c in cols]
    key = np.zeros(len(frame), dtype=np.int32)  # int32 while it fits: half the memory traffic
    span = 1  # keys are in [0, span)
    groups: list[tuple[np.ndarray | None, list[int]]] = [(None, [])]  # (renumbering before, radixes folded in)
    for code, cats in parts:
        size = len(cats) + 1
        if span > 1 and span * size > _DENSE_CELLS:
            present, key = _renumber(key, span)
            groups.append((present, []))
            span = present.size
        if span * size >= 2**31 and key.dtype != np.int64:
            key = key.astype(np.int64)
        key *= size  # in place: no temporaries of a million rows
        key += code
        key += 1
        span *= size
        groups[-1][1].append(size)
    present, cells = _renumber(key, span)
    # Undo the keys, last column first: peel a group's radixes, then map back through its renumbering.
    digits: list[np.ndarray] = []
    rest = present.astype(np.int64)
    for before, sizes in reversed(groups):
        for size in reversed(sizes):
            digits.append(rest % size)
            rest = rest // size
        if before is not None:
            rest = before[rest].astype(np.int64)
    return cells, digits[::-1], [cats for _, cats in parts]


def group_codes(frame: pd.DataFrame, cols: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Cell number of every row for the combinations of ``cols`` that occur, and those combinations.

    Works on category codes with a mixed-radix key, which is several times faster than ``groupby().ngroup()``
    on a million rows. Cells are numbered in category order; missing values form their own cell (None).
    """
    cells, digits, cats = _cells(frame, cols)
    keys = pd.DataFrame({c: np.array([None, *cat], dtype=object)[d] for c, cat, d in zip(cols, cats, digits,
                                                                                         strict=True)})
    return cells, keys


def count_rows(frame: pd.DataFrame, cols: list[str], name: str = "count") -> pd.DataFrame:
    """One row per combination of ``cols`` that occurs, with how many rows have it in column ``name``.

    The columns come back categorical (a categorical keeps its categories, so cells number as on the rows).
    Rows are in the order of each combination's last occurrence, so a "last row wins" lookup on the counts
    (the stratum of a prompt, say) gives what it gives on the rows. Statistics that only add rows up can then
    run on a few thousand counts instead of millions of rows (``preference_table(weight=name)``).
    """
    cells, digits, cats = _cells(frame, cols)
    n_cells = len(digits[0]) if digits else int(len(frame) > 0)
    last = np.full(n_cells, -1, dtype=np.int64)
    np.maximum.at(last, cells, np.arange(len(cells)))
    order = np.argsort(last, kind="stable")
    out = {}
    for col, cat, digit in zip(cols, cats, digits, strict=True):
        dtype = frame[col].dtype if isinstance(frame[col].dtype, pd.CategoricalDtype) else pd.CategoricalDtype(cat)
        out[col] = pd.Categorical.from_codes(digit[order] - 1, dtype=dtype)
    out[name] = np.bincount(cells, minlength=n_cells)[order]
    return pd.DataFrame(out)


def plain_json(value: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, nan/inf to None."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain_json(v) for v in value.tolist()]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return None if not math.isfinite(float(value)) else float(value)
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value
