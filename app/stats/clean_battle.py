"""Convert between our vote frame and FastChat's ``clean_battle`` records, so arena tooling runs on our data
and our statistics run on arena logs.

A ``clean_battle`` log (FastChat ``fastchat/serve/monitor/clean_battle_data.py``) is a JSON list of objects
with ``model_a``, ``model_b``, ``winner`` ('model_a', 'model_b', 'tie', 'tie (bothbad)'), ``judge``,
``anony`` and ``tstamp`` (Unix seconds); extra keys are allowed and ignored by FastChat. Our export adds
``vote_id``, ``study_id``, ``criterion``, ``prompt``, ``theme``, ``detail`` and ``left_model``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
_EXTRAS = ("vote_id", "study_id", "criterion", "prompt", "theme", "detail", "left_model")


class CleanBattleError(ValueError):
    """A clean_battle file could not be read; ``errors`` lists the problems ("record N: ...")."""

    def __init__(self, message: str, errors: list[str] | None = None):
        super().__init__(message if not errors else f"{message}: " + "; ".join(errors[:5]))
        self.errors = errors or []


def to_clean_battle(votes: pd.DataFrame, *, criterion: str | None = None) -> list[dict]:
    """Records for one criterion (or every row when ``criterion`` is None), ordered by time."""
    frame = votes if criterion is None else votes[votes["criterion"] == criterion]
    if "submitted_at" in frame.columns:
        frame = frame.sort_values("submitted_at", kind="stable")
        stamps = frame["submitted_at"].astype("datetime64[ns, UTC]")
        tstamp = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    else:
        tstamp = np.full(len(frame), np.nan)
    judges = frame["evaluator"].to_numpy() if "evaluator" in frame.columns else np.full(len(frame), None)
    extras = [c for c in _EXTRAS if c in frame.columns]
    extra_values = {c: frame[c].tolist() for c in extras}
    out = []
    for k, (a, b, w) in enumerate(zip(frame["model_a"], frame["model_b"], frame["winner"], strict=True)):
        rec = {"model_a": a, "model_b": b, "winner": w, "judge": judges[k], "anony": True,
               "tstamp": None if np.isnan(tstamp[k]) else float(tstamp[k])}
        for c in extras:
            v = extra_values[c][k]
            rec[c] = v.item() if isinstance(v, np.generic) else v
        out.append(rec)
    return out


def clean_battles_by_criterion(votes: pd.DataFrame) -> dict[str, list[dict]]:
    """{criterion: records}: FastChat rates one outcome per battle, so each criterion is its own log."""
    return {c: to_clean_battle(votes, criterion=c) for c in pd.unique(votes["criterion"])}


def read_clean_battle(
    source: str | Path | bytes | list, *, criterion: str = "arena", anony_only: bool = False
) -> pd.DataFrame:
    """A vote frame from a clean_battle log (path, JSON bytes/str, or the parsed list).

    Columns: vote_id (record index), evaluator (judge), criterion, model_a, model_b, winner ('tie (bothbad)'
    folded into 'tie'), winner_raw, anony, submitted_at, plus any of our extras present in the records. There
    is no prompt, so bootstraps resample battles. Raises ``CleanBattleError`` listing bad records.
    """
    if isinstance(source, list):
        records = source
    else:
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("[")):
            try:
                text: str | bytes = Path(source).read_bytes()
            except OSError as exc:
                raise CleanBattleError(f"cannot read {source}: {exc.strerror}") from exc
        else:
            text = source
        try:
            records = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CleanBattleError(f"not valid JSON ({exc}); a clean_battle file is a JSON list of battles") from exc
    if not isinstance(records, list):
        raise CleanBattleError("a clean_battle file must be a JSON list of battle objects")
    errors = []
    for k, rec in enumerate(records):
        if not isinstance(rec, dict):
            errors.append(f"record {k}: not an object")
            continue
        missing = [f for f in ("model_a", "model_b", "winner") if not isinstance(rec.get(f), str)]
        if missing:
            errors.append(f"record {k}: missing {', '.join(missing)}")
        elif rec["winner"] not in WINNERS:
            errors.append(f"record {k}: winner {rec['winner']!r} is not one of {', '.join(WINNERS)}")
    if errors:
        raise CleanBattleError(f"{len(errors)} bad record(s)", errors)
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        frame = pd.DataFrame(columns=["model_a", "model_b", "winner"])
    if anony_only and "anony" in frame.columns:
        frame = frame[frame["anony"].fillna(False).astype(bool)]
    out = pd.DataFrame(
        {
            "vote_id": frame["vote_id"] if "vote_id" in frame.columns else frame.index,
            "evaluator": frame["judge"].astype(str) if "judge" in frame.columns else None,
            "criterion": frame["criterion"] if "criterion" in frame.columns else criterion,
            "model_a": frame["model_a"].astype(str),
            "model_b": frame["model_b"].astype(str),
            "winner": frame["winner"].replace({"tie (bothbad)": "tie"}).astype(str),
            "winner_raw": frame["winner"].astype(str),
        }
    )
    if "anony" in frame.columns:
        out["anony"] = frame["anony"].astype(bool)
    if "tstamp" in frame.columns:
        out["submitted_at"] = pd.to_datetime(frame["tstamp"], unit="s", utc=True).astype("datetime64[ns, UTC]")
    for c in ("prompt", "theme", "detail", "left_model", "study_id"):
        if c in frame.columns:
            out[c] = frame[c]
    return out.reset_index(drop=True)
