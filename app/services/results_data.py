"""The database → vote frame: one row per vote × criterion, the input of every statistic and export.

The frame's columns are the cross-team contract (see the brief / ``VOTE_COLUMNS``). Evaluators appear only
under a pseudonym; attention-check pairs never appear. The frame is read with one SQL query and built
column-wise, which keeps hundreds of thousands of votes in the low seconds (ORM objects would not).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from app.models import Assignment, Clip, Criterion, Evaluator, Pair, Prompt, StudyModel, Vote, VoteChoice

VOTE_COLUMNS: tuple[str, ...] = (
    "vote_id", "study_id", "evaluator", "prompt", "theme", "detail", "criterion", "model_a", "model_b",
    "left_model", "side", "winner", "submitted_at", "time_spent_ms", "flagged",
)
# VoteChoice.outcome ('a' / 'b' / 'tie', relative to Pair.clip_a) in FastChat clean_battle spelling.
_WINNER = {"a": "model_a", "b": "model_b", "tie": "tie"}


def pseudonym(public_id: str) -> str:
    """A stable pseudonymous evaluator id: 'e' + the first 10 hex digits of sha256(public_id).

    public_id is a random 192-bit token, so its hash cannot be reversed or linked to a person or to the
    evaluator's session; 40 bits keep collisions negligible for any realistic number of evaluators.
    """
    return "e" + hashlib.sha256(public_id.encode()).hexdigest()[:10]


def empty_vote_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in VOTE_COLUMNS})
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["vote_id"] = frame["vote_id"].astype("int64")
    frame["study_id"] = frame["study_id"].astype("int64")
    frame["time_spent_ms"] = frame["time_spent_ms"].astype("int64")
    frame["flagged"] = frame["flagged"].astype(bool)
    # SQLite hands back naive datetimes (stored as UTC), PostgreSQL aware ones: utc=True treats both right.
    frame["submitted_at"] = pd.to_datetime(frame["submitted_at"], utc=True).astype("datetime64[ns, UTC]")
    for col in ("evaluator", "prompt", "theme", "detail", "criterion", "model_a", "model_b", "left_model",
                "side", "winner"):
        frame[col] = frame[col].astype(str)
    return frame[list(VOTE_COLUMNS)]


def _vote_query(study_id: int, *, after_vote_id: int = 0) -> Select:
    model_a = aliased(StudyModel)
    model_b = aliased(StudyModel)
    # Which model was on the left: the assignment recorded the left clip; the pair says which clip is "a".
    left_is_a = Assignment.left_clip_id == Pair.clip_a_id
    return (
        select(
            Vote.id, Vote.study_id, Evaluator.public_id, Prompt.external_id, Prompt.theme, Prompt.detail,
            Criterion.key, model_a.name, model_b.name, left_is_a, VoteChoice.side, VoteChoice.outcome,
            Vote.submitted_at, Vote.time_spent_ms, Evaluator.flagged,
        )
        .select_from(VoteChoice)
        .join(Vote, Vote.id == VoteChoice.vote_id)
        .join(Criterion, Criterion.id == VoteChoice.criterion_id)
        .join(Pair, Pair.id == Vote.pair_id)
        .join(Assignment, Assignment.id == Vote.assignment_id)
        .join(Prompt, Prompt.id == Pair.prompt_id)
        .join(Evaluator, Evaluator.id == Vote.evaluator_id)
        .join(model_a, model_a.id == VoteChoice.model_a_id)
        .join(model_b, model_b.id == VoteChoice.model_b_id)
        .where(Vote.study_id == study_id, Vote.id > after_vote_id, Pair.kind == "normal")
        .order_by(Vote.id, Criterion.position)
    )


def load_vote_frame(session: Session, *, study_id: int, after_vote_id: int = 0) -> pd.DataFrame:
    """Every vote × criterion of a study's normal pairs (votes with id > ``after_vote_id``), as the contract says.

    Flagged evaluators' votes are included with ``flagged=True``; the statistics drop them by default.
    """
    rows = session.execute(_vote_query(study_id, after_vote_id=after_vote_id)).all()
    if not rows:
        return empty_vote_frame()
    (vote_id, study, public_id, prompt, theme, detail, criterion, name_a, name_b, left_is_a, side, outcome,
     submitted_at, time_spent_ms, flagged) = zip(*rows, strict=True)
    # Pseudonyms are computed once per evaluator, not once per row.
    names = {p: pseudonym(p) for p in set(public_id)}
    frame = pd.DataFrame({
        "vote_id": vote_id, "study_id": study, "evaluator": [names[p] for p in public_id], "prompt": prompt,
        "theme": theme, "detail": detail, "criterion": criterion, "model_a": name_a, "model_b": name_b,
        "left_model": [a if is_a else b for a, b, is_a in zip(name_a, name_b, left_is_a, strict=True)],
        "side": side, "winner": [_WINNER[o] for o in outcome], "submitted_at": submitted_at,
        "time_spent_ms": time_spent_ms, "flagged": flagged,
    })
    return _typed(frame)


@dataclass(frozen=True)
class VoteFingerprint:
    """What changes whenever the results could: votes added or removed, or evaluators (un)flagged."""

    votes: int
    max_vote_id: int
    flagged: str  # digest of the flagged evaluator ids

    def as_key(self) -> tuple[int, int, str]:
        return (self.votes, self.max_vote_id, self.flagged)

    def token(self) -> str:
        """An opaque string for the page to compare (reveals nothing but counts an admin already sees)."""
        return f"{self.votes}-{self.max_vote_id}-{self.flagged}"


def vote_fingerprint(session: Session, *, study_id: int) -> VoteFingerprint:
    """Two cheap indexed queries; the dashboard polls this instead of recomputing anything."""
    count, max_id = session.execute(
        select(func.count(Vote.id), func.coalesce(func.max(Vote.id), 0)).where(Vote.study_id == study_id)
    ).one()
    flagged_ids = session.scalars(
        select(Evaluator.id).where(Evaluator.study_id == study_id, Evaluator.flagged.is_(True)).order_by(Evaluator.id)
    ).all()
    digest = hashlib.sha256(",".join(map(str, flagged_ids)).encode()).hexdigest()[:16]
    return VoteFingerprint(votes=int(count), max_vote_id=int(max_id), flagged=digest)


def criterion_keys(session: Session, *, study_id: int) -> list[str]:
    return list(session.scalars(select(Criterion.key).where(Criterion.study_id == study_id)
                                .order_by(Criterion.position)))


def criterion_labels(session: Session, *, study_id: int) -> dict[str, str]:
    rows = session.execute(select(Criterion.key, Criterion.label).where(Criterion.study_id == study_id)
                           .order_by(Criterion.position)).all()
    return dict(rows)


def evaluator_rows(session: Session, *, study_id: int) -> list[dict]:
    """Every evaluator who joined, pseudonymous, with their vote count, median seconds per vote and QC flags.

    Counts include attention-check votes (they are votes the person cast); the vote frame does not.
    """
    evaluators = session.execute(
        select(Evaluator.id, Evaluator.public_id, Evaluator.created_at, Evaluator.completed_at, Evaluator.flagged,
               Evaluator.flag_reasons).where(Evaluator.study_id == study_id).order_by(Evaluator.id)
    ).all()
    times = pd.DataFrame(session.execute(select(Vote.evaluator_id, Vote.time_spent_ms)
                                         .where(Vote.study_id == study_id)).all(),
                         columns=["evaluator_id", "time_spent_ms"])
    grouped = times.groupby("evaluator_id")["time_spent_ms"].agg(["count", "median"])
    rows = []
    for ev_id, public_id, joined, completed, flagged, reasons in evaluators:
        n = int(grouped.at[ev_id, "count"]) if ev_id in grouped.index else 0
        median_ms = float(grouped.at[ev_id, "median"]) if n else None
        rows.append({"evaluator": pseudonym(public_id), "joined_at": joined, "completed_at": completed,
                     "flagged": bool(flagged), "flag_reasons": list(reasons or []), "votes": n,
                     "median_seconds": None if median_ms is None else round(median_ms / 1000, 1)})
    rows.sort(key=lambda r: -r["votes"])
    return rows


def model_costs(session: Session, *, study_id: int) -> list[dict]:
    """Per model: how many done clips, how many with a recorded cost, and the median seconds per clip.

    Medians, not means: a first clip that loads weights or compiles kernels would dominate a mean.
    Attention-check copies (variant != "") are not generations and are left out.
    """
    models = session.execute(select(StudyModel.id, StudyModel.name).where(StudyModel.study_id == study_id)
                             .order_by(StudyModel.position)).all()
    clips = session.execute(
        select(Clip.model_id, Clip.wall_seconds, Clip.denoise_seconds, Clip.unet_evals, Clip.steps,
               Clip.peak_memory_bytes)
        .where(Clip.study_id == study_id, Clip.status == "done", Clip.variant == "")
    ).all()
    frame = pd.DataFrame(clips, columns=["model_id", "wall_seconds", "denoise_seconds", "unet_evals", "steps",
                                         "peak_memory_bytes"])
    out = []
    for model_id, name in models:
        mine = frame[frame["model_id"] == model_id]
        timed = mine["wall_seconds"].dropna()

        def median(col: str, mine=mine) -> float | None:
            vals = mine[col].dropna()
            return float(vals.median()) if len(vals) else None

        out.append({"model": name, "clips": int(len(mine)), "timed_clips": int(len(timed)),
                    "median_wall_seconds": median("wall_seconds"), "median_denoise_seconds": median("denoise_seconds"),
                    "median_unet_evals": median("unet_evals"), "median_steps": median("steps"),
                    "median_peak_memory_bytes": median("peak_memory_bytes")})
    return out
