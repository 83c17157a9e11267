"""Read and check a study's raw votes export (CSV, JSON Lines or Parquet) for re-analysis.

The file is what the study's "raw votes" download writes (``app.services.exports.RAW_VOTE_COLUMNS``): one row
per vote x criterion. ``read_votes_file`` returns a frame with the columns and types of the study's own vote
frame, so ``compute_results`` on it gives the study's ``results.json``. Nothing is computed from a file with a
problem: every row in the wrong shape is reported at once, by its place in the file -- the CSV line (the header
is line 1; a value spanning lines is counted from where its row starts), the JSON Lines line, or the Parquet
row (1 = the first row) -- and no frame is returned.

Required columns: those that say what was judged and by whom (``REQUIRED``); the others are optional, but
without ``theme`` the per-theme tables are skipped, without ``left_model``/``side`` position bias, and so on.
Columns the statistics do not know are ignored (and listed), so an extra ``pair_id`` cannot change the units of
agreement behind the reader's back.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from app.stats.frame import SIDES, WINNERS

REQUIRED = ("vote_id", "evaluator", "prompt", "criterion", "model_a", "model_b", "winner")
OPTIONAL = ("study_id", "study", "theme", "detail", "left_model", "side", "winner_model", "submitted_at",
            "time_spent_ms", "flagged")
TEXT = ("study", "evaluator", "prompt", "theme", "detail", "criterion", "model_a", "model_b", "left_model", "side",
        "winner", "winner_model")
INTEGER = ("vote_id", "study_id", "time_spent_ms")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
MAX_LISTED = 20  # problems spelled out in the message; the rest are counted
_WINNER_ALIASES = {"tie (bothbad)": "tie"}  # as frame.check_votes folds them
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
_CONSTANT_PER_VOTE = ("evaluator", "prompt", "theme", "detail", "model_a", "model_b", "left_model", "flagged",
                      "study_id", "study", "submitted_at", "time_spent_ms")


class VotesFileError(ValueError):
    """The votes file cannot be analysed; ``problems`` lists each one with its line or row."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        listed = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(listed)
        detail = "".join(f"\n  {p}" for p in listed) + (f"\n  ... and {more} more" if more > 0 else "")
        super().__init__(message + detail)


@dataclass(frozen=True)
class VotesFile:
    """A checked votes file: the frame, the criteria in the study's order, and what was left out."""

    frame: pd.DataFrame
    criteria: list[str]
    format: str
    ignored_columns: list[str] = field(default_factory=list)


def votes_format(path: Path, fmt: str | None = None) -> str:
    """'csv', 'jsonl' or 'parquet', from ``fmt`` or the file name."""
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise VotesFileError(f"unknown format {fmt!r}; use csv, jsonl or parquet")
        return fmt
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise VotesFileError(f"cannot tell the format of {path.name} from its name; a raw votes export ends in "
                             ".csv, .jsonl or .parquet")
    return FORMATS[suffix]


# --- reading, format by format: (frame of raw values, place of each row, problems found while reading) ---------


def _csv_lines(path: Path) -> list[int]:
    """The line each CSV record starts on (index 0: the header, line 1), counting lines inside quoted values."""
    starts = []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        start = 1
        for _ in reader:
            starts.append(start)
            start = reader.line_num + 1
    return starts


def _read_csv(path: Path) -> tuple[pd.DataFrame, Callable[[np.ndarray], list[str]], list[tuple[int, str]]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise VotesFileError(f"{path.name} is empty: a raw votes export starts with a header line")
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise VotesFileError(f"line 1: column(s) {', '.join(duplicated)} appear more than once in the header")
    bad_records: list[tuple[int, str]] = []  # (record number, 1 = header; problem)

    def invalid(row: Any) -> str:
        bad_records.append((int(row.number), f"{row.actual_columns} fields where the header has "
                                              f"{row.expected_columns}"))
        return "skip"

    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid),
            convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                  strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise VotesFileError(f"{path.name} is not a readable CSV file: {exc}") from exc
    frame = table.to_pandas()
    lines: list[int] | None = None

    def line_numbers() -> list[int]:
        nonlocal lines
        if lines is None:
            lines = _csv_lines(path)
        return lines

    # Rows of the frame are the records that were not skipped; record k (1 = header) starts on lines[k - 1].
    skipped = sorted(n for n, _ in bad_records)
    records = np.delete(np.arange(2, len(frame) + len(skipped) + 2), [n - 2 for n in skipped])

    def where_record(record: int) -> str:
        starts = line_numbers()
        return f"line {starts[record - 1] if record - 1 < len(starts) else record}"

    def where(rows: np.ndarray) -> list[str]:
        return [where_record(int(r)) for r in records[rows]]

    # a skipped record sorts with the rows around it
    problems = [(int(records.searchsorted(n)), f"{where_record(n)}: {text}") for n, text in bad_records]
    return frame, where, problems


def _arrow_schema() -> pa.Schema:
    """The types a raw votes export's JSON values have (text stays text: "001" is not the number 1)."""
    types = {c: pa.string() for c in TEXT} | {c: pa.int64() for c in INTEGER}
    return pa.schema([*types.items(), ("flagged", pa.bool_()), ("submitted_at", pa.string())])


def _jsonl_lines(path: Path) -> np.ndarray:
    """The numbers of the lines that are not blank (one vote row each)."""
    with path.open("rb") as handle:
        return np.array([n for n, raw in enumerate(handle, start=1) if raw.strip()], dtype=np.int64)


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, Callable[[np.ndarray], list[str]], list[tuple[int, str]]]:
    """pyarrow's reader when every line is a JSON object of the export's types (fast); else line by line."""
    try:
        table = pa_json.read_json(path, parse_options=pa_json.ParseOptions(explicit_schema=_arrow_schema(),
                                                                           unexpected_field_behavior="infer"))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _read_jsonl_by_line(path)  # finds and names the line that is not what it should be
    if table.num_rows == 0:
        raise VotesFileError(f"{path.name} has no votes: JSON Lines holds one JSON object per line")
    # the explicit schema lists every known column; one no line has is not in the file
    absent = [c for c in table.column_names if table.column(c).null_count == table.num_rows]
    frame = table.drop_columns(absent).to_pandas()
    lines: np.ndarray | None = None

    def where(rows: np.ndarray) -> list[str]:
        nonlocal lines
        if lines is None:
            lines = _jsonl_lines(path)
        return [f"line {n}" for n in lines[rows]]

    return frame, where, []


def _read_jsonl_by_line(path: Path) -> tuple[pd.DataFrame, Callable[[np.ndarray], list[str]],
                                              list[tuple[int, str]]]:
    records: list[dict[str, Any]] = []
    line_of: list[int] = []
    problems: list[tuple[int, str]] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problems.append((len(records), f"line {number}: not valid JSON ({exc})"))
                continue
            if not isinstance(value, dict):
                problems.append((len(records), f"line {number}: a JSON {type(value).__name__}, not an object"))
                continue
            records.append(value)
            line_of.append(number)
    if not records and not problems:
        raise VotesFileError(f"{path.name} has no votes: JSON Lines holds one JSON object per line")
    columns = list(dict.fromkeys(k for rec in records for k in rec))
    frame = pd.DataFrame({c: [rec.get(c) for rec in records] for c in columns})
    lines = np.asarray(line_of, dtype=np.int64)
    return frame, lambda rows: [f"line {n}" for n in lines[rows]], problems


def _read_parquet(path: Path) -> tuple[pd.DataFrame, Callable[[np.ndarray], list[str]], list[tuple[int, str]]]:
    try:
        frame = pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise VotesFileError(f"{path.name} is not a readable Parquet file: {exc}") from exc
    return frame.reset_index(drop=True), lambda rows: [f"row {r + 1}" for r in rows], []


# --- checking values ----------------------------------------------------------------------------------------


def _missing(series: pd.Series) -> np.ndarray:
    return np.asarray(series.isna().to_numpy(), dtype=bool)


def _text(series: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(values as str (None where missing), rows whose value is neither text nor missing). Whole numbers become
    their text, as the database frame's ``astype(str)`` makes them; booleans, fractions, lists are not text."""
    kind = pd.api.types.infer_dtype(series, skipna=True)
    missing = _missing(series)
    if kind in ("string", "empty"):
        values = series.astype(object).where(~missing, None)
        return values, np.zeros(len(series), dtype=bool)
    raw = series.to_numpy(dtype=object)
    ok = np.array([isinstance(v, str) or (isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_))
                   for v in raw], dtype=bool)
    text = pd.Series([str(v) if k else None for v, k in zip(raw, ok, strict=True)], index=series.index, dtype=object)
    return text, ~ok & ~missing


def _integers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values as int64, 0 where bad; rows that are not whole numbers)."""
    if pd.api.types.is_integer_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64), np.zeros(len(series), dtype=bool)
    if pd.api.types.is_string_dtype(series.dtype) and not series.isna().any():
        try:  # text of whole numbers, as a CSV file holds them: one pyarrow cast (a bad value fails it)
            ints = pa_compute.cast(pa.array(series.to_numpy(dtype=object) if series.dtype == object else series),
                                   pa.int64())
            return ints.to_numpy(zero_copy_only=False).astype(np.int64), np.zeros(len(series), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass  # find the bad rows below
    kind = pd.api.types.infer_dtype(series, skipna=False)
    if kind in ("boolean", "mixed"):
        raw = series.to_numpy(dtype=object)
        keep = np.array([not isinstance(v, bool | np.bool_) for v in raw], dtype=bool)
    else:
        keep = np.ones(len(series), dtype=bool)
    text = series.astype(object).where(keep, None)
    if kind == "string":
        text = text.str.strip()
        keep &= text.str.fullmatch(r"-?\d+").fillna(False).to_numpy(dtype=bool)
        text = text.where(keep, None)
    number = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    good = keep & np.isfinite(number) & (np.mod(np.nan_to_num(number), 1) == 0)
    return np.where(good, np.nan_to_num(number), 0).astype(np.int64), ~good


def _booleans(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values as bool, rows that are not true/false)."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=bool), np.zeros(len(series), dtype=bool)
    code, uniques = pd.factorize(series)  # a handful of distinct values: read each once
    if 0 < len(uniques) < len(series):
        value, bad = _booleans(pd.Series(np.asarray(uniques, dtype=object), dtype=object))
        known = code >= 0
        return (np.where(known, value[np.maximum(code, 0)], False),
                np.where(known, bad[np.maximum(code, 0)], True))
    raw = series.to_numpy(dtype=object)
    is_bool = np.array([isinstance(v, bool | np.bool_) for v in raw], dtype=bool)
    words = pd.Series([v.strip().lower() if isinstance(v, str) else None for v in raw], dtype=object)
    true, false = words.isin(_TRUE).to_numpy(), words.isin(_FALSE).to_numpy()
    value = np.where(is_bool, np.array([bool(v) if k else False for v, k in zip(raw, is_bool, strict=True)]), true)
    return value.astype(bool), ~(is_bool | true | false)


def _said(text: str) -> Callable[[int], str]:
    """The same message for every row."""
    return lambda _row: text


def _bad_value(column: str, series: pd.Series, what: str) -> Callable[[int], str]:
    """'<column> <the row's value> <what>'."""
    def message(row: int) -> str:
        return f"{column} {_show(series.iloc[row])} {what}"
    return message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """The typed frame and every (row, problem) found in it."""
    problems: list[tuple[int, str]] = []
    out: dict[str, Any] = {}

    def flag(mask: np.ndarray, message: Callable[[int], str]) -> None:
        problems.extend((int(r), message(int(r))) for r in np.flatnonzero(mask))

    present = [c for c in (*REQUIRED, *OPTIONAL) if c in raw.columns]
    for col in present:
        series = raw[col]
        missing = _missing(series)
        if col in TEXT:
            text, bad = _text(series)
            flag(bad, _bad_value(col, series, "is not text"))
            if col in REQUIRED:
                flag(missing, _said(f"no {col}"))
                flag(~missing & ~bad & (text.to_numpy() == ""), _said(f"{col} is empty"))
            out[col] = text
            continue
        flag(missing, _said(f"no {col}"))
        if col in INTEGER:
            out[col], bad = _integers(series)
            flag(bad & ~missing, _bad_value(col, series, "is not a whole number"))
        elif col == "flagged":
            out[col], bad = _booleans(series)
            flag(bad & ~missing, _bad_value(col, series, "is not true or false"))
        else:  # submitted_at
            if pd.api.types.is_datetime64_any_dtype(series.dtype):
                stamps = pd.to_datetime(series, utc=True)
            else:
                stamps = pd.to_datetime(series.astype(object).where(~missing, None), utc=True, format="ISO8601",
                                        errors="coerce")
            flag(stamps.isna().to_numpy() & ~missing, _bad_value(col, series, "is not an ISO 8601 time"))
            out[col] = stamps.astype("datetime64[ns, UTC]")
    frame = pd.DataFrame(out, index=raw.index)
    if "winner" in frame.columns:
        frame["winner"] = frame["winner"].replace(_WINNER_ALIASES)
        winner = frame["winner"]
        flag((~winner.isin(WINNERS) & winner.notna()).to_numpy(),
             lambda r: f"winner {_show(raw['winner'].iloc[r])} is not one of {', '.join(WINNERS)}")
    _check_models(frame, raw, flag)
    return frame, problems


def _check_models(frame: pd.DataFrame, raw: pd.DataFrame, flag: Callable[[np.ndarray, Callable[[int], str]], None]
                  ) -> None:
    """side, left_model and winner_model agree with the pair and the winner."""
    a, b, w = frame["model_a"], frame["model_b"], frame["winner"]
    valid = w.isin(WINNERS).to_numpy() & a.notna().to_numpy() & b.notna().to_numpy()
    if "side" in frame.columns:
        side = frame["side"]
        flag((~side.isin(SIDES) & side.notna()).to_numpy(),
             lambda r: f"side {_show(raw['side'].iloc[r])} is not one of {', '.join(SIDES)}")
        tie_mismatch = valid & side.isin(SIDES).to_numpy() & ((side == "tie") != (w == "tie")).to_numpy()
        flag(tie_mismatch, lambda r: f"side {frame['side'].iloc[r]!r} but winner {frame['winner'].iloc[r]!r}")
    if "left_model" in frame.columns:
        left = frame["left_model"]
        on_pair = ((left == a) | (left == b)).to_numpy()
        flag(valid & left.notna().to_numpy() & ~on_pair,
             lambda r: f"left_model {frame['left_model'].iloc[r]!r} is neither model_a nor model_b")
        if "side" in frame.columns:
            winner_model = np.where(w == "model_a", a, np.where(w == "model_b", b, None))
            decided = valid & on_pair & (w != "tie").to_numpy() & frame["side"].isin(("left", "right")).to_numpy()
            clicked_left = (frame["side"] == "left").to_numpy()
            mismatch = decided & ((winner_model == left.to_numpy()) != clicked_left)
            flag(mismatch, lambda r: f"side {frame['side'].iloc[r]!r} but the winner "
                                     f"{winner_model[r]!r} was shown on the "
                                     f"{'left' if winner_model[r] == frame['left_model'].iloc[r] else 'right'}")
    if "winner_model" in frame.columns:
        expected = np.where(w == "model_a", a, np.where(w == "model_b", b, "tie"))
        flag(valid & (frame["winner_model"].to_numpy() != expected),
             lambda r: f"winner_model {frame['winner_model'].iloc[r]!r} but winner {frame['winner'].iloc[r]!r} "
                       f"is {expected[r]!r}")


def _check_votes(frame: pd.DataFrame, where: Callable[[np.ndarray], list[str]]) -> list[tuple[int, str]]:
    """One judgement per vote and criterion, and one evaluator, prompt, pair ... per vote."""
    problems: list[tuple[int, str]] = []
    key = frame[["vote_id", "criterion"]]
    repeated = np.flatnonzero(key.duplicated(keep="first").to_numpy())
    position = pd.Series(np.arange(len(frame)))
    if repeated.size:
        first_row = position.groupby([frame["vote_id"].to_numpy(), frame["criterion"].to_numpy()]
                                     ).transform("min").to_numpy()
        places = where(first_row[repeated])
        problems += [(int(r), f"vote {frame['vote_id'].iloc[r]} judges criterion {frame['criterion'].iloc[r]!r} "
                              f"again (first on {place})") for r, place in zip(repeated, places, strict=True)]
    vote_first = position.groupby(frame["vote_id"].to_numpy()).transform("min").to_numpy()
    for col in _CONSTANT_PER_VOTE:
        if col not in frame.columns:
            continue
        code = pd.factorize(frame[col])[0]  # integer codes compare fast (missing = -1, equal to missing)
        differs = np.flatnonzero(code != code[vote_first])
        if differs.size:
            values = frame[col].to_numpy()
            places = where(vote_first[differs])
            problems += [(int(r), f"vote {frame['vote_id'].iloc[r]} has {col} {_show(values[r])} here but "
                                  f"{_show(values[vote_first[r]])} on {place}")
                         for r, place in zip(differs, places, strict=True)]
    return problems


def read_votes_file(path: str | Path, *, fmt: str | None = None) -> VotesFile:
    """The votes of a raw votes export, checked; raises ``VotesFileError`` listing every problem by line/row."""
    path = Path(path)
    kind = votes_format(path, fmt)
    if not path.is_file():
        raise VotesFileError(f"{path} is not a file")
    readers = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}
    raw, where, problems = readers[kind](path)
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise VotesFileError(f"{path.name} lacks column(s) {', '.join(missing)}; a raw votes export has "
                             f"{', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)}")
    if raw.empty and not problems:
        raise VotesFileError(f"{path.name} has a header but no votes")
    frame, found = _check(raw)
    problems += found
    if not problems:  # per-vote consistency only makes sense on rows of the right shape
        problems += _check_votes(frame, where)
    if problems:
        problems.sort(key=lambda p: p[0])
        # file-level problems found while reading already name their place; the rest get it now
        rows = np.array([r for r, text in problems if not text.startswith(("line ", "row "))], dtype=np.int64)
        places = iter(where(rows)) if rows.size else iter([])
        listed = [text if text.startswith(("line ", "row ")) else f"{next(places)}: {text}" for _, text in problems]
        raise VotesFileError(f"{path.name}: {len(listed)} problem(s); nothing was analysed", listed)
    ignored = [c for c in raw.columns if c not in REQUIRED and c not in OPTIONAL]
    frame = frame.reset_index(drop=True)
    criteria = [str(c) for c in pd.unique(frame["criterion"])]  # the export lists a vote's criteria in order
    return VotesFile(frame=frame, criteria=criteria, format=kind, ignored_columns=ignored)
