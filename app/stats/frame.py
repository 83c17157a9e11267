"""Checks and normalises a vote frame (the contract in the team brief) before any statistic is computed.

Required columns: criterion, model_a, model_b, winner ('model_a' | 'model_b' | 'tie'). Everything else
(vote_id, evaluator, prompt, theme, detail, left_model, side, flagged, ...) is optional: the analyses that
need a missing column are skipped, so an external arena log can be analysed with the same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.criteria import DEFAULT_CRITERIA

REQUIRED = ("criterion", "model_a", "model_b", "winner")
WINNERS = ("model_a", "model_b", "tie")
# FastChat's clean_battle spells a tie where both answers were bad as 'tie (bothbad)'; for preference it is a tie.
_WINNER_ALIASES = {"tie (bothbad)": "tie"}


class VoteFrameError(ValueError):
    """The vote frame does not have the shape the statistics need; the message says what to fix."""


def check_votes(votes: pd.DataFrame) -> pd.DataFrame:
    """Validate and return a copy with ``winner`` normalised (tie aliases folded into 'tie')."""
    if not isinstance(votes, pd.DataFrame):
        raise VoteFrameError(f"expected a pandas DataFrame of votes, got {type(votes).__name__}")
    missing = [c for c in REQUIRED if c not in votes.columns]
    if missing:
        raise VoteFrameError(f"vote frame lacks column(s) {', '.join(missing)}; see the vote-frame contract")
    out = votes.copy()
    winner = out["winner"].astype(object).replace(_WINNER_ALIASES)
    bad = ~winner.isin(WINNERS)
    if bad.any():
        examples = ", ".join(repr(v) for v in pd.unique(winner[bad])[:3])
        raise VoteFrameError(f"winner must be one of {', '.join(WINNERS)}; found {examples}")
    out["winner"] = winner.astype(str)
    for col in ("criterion", "model_a", "model_b"):
        out[col] = out[col].astype(str)
    return out


def criteria_order(votes: pd.DataFrame, criteria: list[str] | None = None) -> list[str]:
    """The criteria to analyse: as given, else the defaults' order first and any others as they appear."""
    present = list(pd.unique(votes["criterion"]))
    if criteria is not None:
        unknown = [c for c in criteria if c not in present]
        if unknown and len(votes):
            raise VoteFrameError(f"no votes for criterion/criteria {', '.join(unknown)}; present: {', '.join(present)}")
        return list(criteria)
    default = [c.key for c in DEFAULT_CRITERIA]
    return [c for c in default if c in present] + [c for c in present if c not in default]


def model_order(votes: pd.DataFrame) -> list[str]:
    """Models ordered by how often they are model_a (the study's lower position), then by name.

    In a BlindPair study model_a is always the model with the lower position, so this recovers the study's
    order; for external logs it is a stable, documented order.
    """
    a = votes["model_a"].value_counts()
    b = votes["model_b"].value_counts()
    names = sorted(set(a.index) | set(b.index))
    share_a = {m: a.get(m, 0) / (a.get(m, 0) + b.get(m, 0)) for m in names}
    return sorted(names, key=lambda m: (-share_a[m], m))


def orient_pairs(votes: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Make model_a the earlier model of ``models`` in every row, swapping the winner with it."""
    rank = {m: i for i, m in enumerate(models)}
    ra = votes["model_a"].map(rank).to_numpy()
    rb = votes["model_b"].map(rank).to_numpy()
    swap = ra > rb
    if not swap.any():
        return votes
    out = votes.copy()
    a = out["model_a"].to_numpy(copy=True)
    b = out["model_b"].to_numpy(copy=True)
    out["model_a"] = np.where(swap, b, a)
    out["model_b"] = np.where(swap, a, b)
    w = out["winner"].to_numpy()
    out["winner"] = np.where(swap & (w == "model_a"), "model_b", np.where(swap & (w == "model_b"), "model_a", w))
    return out
