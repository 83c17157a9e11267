"""The database → vote frame: one row per vote × criterion, the input of every statistic and export.

The frame's columns are the cross-team contract (see the brief / ``VOTE_COLUMNS``). Evaluators appear only
under a pseudonym; attention-check pairs never appear. The frame is read with one SQL query and built
column-wise, which keeps hundreds of thousands of votes in the low seconds (ORM objects would not).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Select, String, func, select, type_coerce
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
    stamps = frame["submitted_at"]
    text = len(stamps) > 0 and isinstance(stamps.iloc[0], str)
    frame["submitted_at"] = pd.to_datetime(stamps, utc=True, format="ISO8601" if text else None).astype(
        "datetime64[ns, UTC]")
    for col in ("evaluator", "prompt", "theme", "detail", "criterion", "model_a", "model_b", "left_model",
                "side", "winner"):
        frame[col] = frame[col].astype(str)
    return frame[list(VOTE_COLUMNS)]


def _votes_query(study_id: int, *, after_vote_id: int) -> Select:
    """One row per vote of a normal pair: who, which prompt, which models, which side was model_a's."""
    clip_a, clip_b = aliased(Clip), aliased(Clip)
    # Which model was on the left: the assignment recorded the left clip; the pair says which clip is "a".
    left_is_a = Assignment.left_clip_id == Pair.clip_a_id
    return (
        select(Vote.id, Vote.study_id, Evaluator.public_id, Prompt.external_id, Prompt.theme, Prompt.detail,
               clip_a.model_id, clip_b.model_id, left_is_a,
               # Raw column value: parsing 10^5 datetimes row by row in Python is slower than one vectorised
               # pd.to_datetime (SQLite stores ISO text; PostgreSQL's driver already returns datetimes).
               type_coerce(Vote.submitted_at, String), Vote.time_spent_ms, Evaluator.flagged)
        .join(Pair, Pair.id == Vote.pair_id)
        .join(Assignment, Assignment.id == Vote.assignment_id)
        .join(Prompt, Prompt.id == Pair.prompt_id)
        .join(Evaluator, Evaluator.id == Vote.evaluator_id)
        .join(clip_a, clip_a.id == Pair.clip_a_id)
        .join(clip_b, clip_b.id == Pair.clip_b_id)
        .where(Vote.study_id == study_id, Vote.id > after_vote_id, Pair.kind == "normal")
    )


def _choices_query(study_id: int, *, after_vote_id: int) -> Select:
    return (
        select(VoteChoice.vote_id, VoteChoice.criterion_id, VoteChoice.side, VoteChoice.outcome)
        .join(Vote, Vote.id == VoteChoice.vote_id)
        .where(Vote.study_id == study_id, Vote.id > after_vote_id)
    )


def _columns(session: Session, query: Select, names: list[str]) -> pd.DataFrame:
    """Run a Core query on the session's own DBAPI connection (its transaction) and build the frame.

    The driver's plain tuples go straight to pandas, as ``pandas.read_sql`` (the benchmark's floor) does.
    SQLAlchemy's result rows cost ~0.8 s per 700k rows to build and the transposition to columns another
    0.7 s (bench.analysis, 100k votes on SQLite); the ORM's per-row work was slower still.
    """
    connection = session.connection()
    compiled = query.compile(dialect=connection.dialect)
    params = compiled.construct_params()
    args = tuple(params[name] for name in compiled.positiontup or ()) if compiled.positional else params
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection is None:  # only after the pool invalidated it, which the session's own never is here
        raise RuntimeError("the session's database connection was closed while reading the votes")
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(str(compiled), args)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if not rows:
        return pd.DataFrame({n: pd.Series(dtype=object) for n in names})
    return pd.DataFrame(rows, columns=names)


def load_vote_frame(session: Session, *, study_id: int, after_vote_id: int = 0) -> pd.DataFrame:
    """Every vote × criterion of a study's normal pairs (votes with id > ``after_vote_id``), as the contract says.

    Flagged evaluators' votes are included with ``flagged=True``; the statistics drop them by default.
    Rows are ordered by vote id, then by the study's criterion order.

    Why two narrow queries and a pandas merge instead of one wide join: measured on SQLite with 200,000 votes
    (1.2M rows), the single join returning names per row took ~19 s; votes (200k rows, with their joins)
    plus choices (1.2M rows of ids) take ~3 s, and the merge well under a second.
    """
    votes = _columns(session, _votes_query(study_id, after_vote_id=after_vote_id),
                     ["vote_id", "study_id", "public_id", "prompt", "theme", "detail", "model_a_id", "model_b_id",
                      "left_is_a", "submitted_at", "time_spent_ms", "flagged"])
    if votes.empty:
        return empty_vote_frame()
    choices = _columns(session, _choices_query(study_id, after_vote_id=after_vote_id),
                       ["vote_id", "criterion_id", "side", "outcome"])
    # "Both are bad" enters the statistics as a tie, decided once in app/services/answers.py; the answers
    # export keeps it apart.
    choices["side"] = choices["side"].replace({"both_bad": "tie"})
    criteria = session.execute(select(Criterion.id, Criterion.key, Criterion.position)
                               .where(Criterion.study_id == study_id)).all()
    model_names = dict(session.execute(select(StudyModel.id, StudyModel.name)
                                       .where(StudyModel.study_id == study_id)).all())
    # Pseudonyms and names are computed once per evaluator / model, not once per row.
    votes["evaluator"] = votes["public_id"].map({p: pseudonym(p) for p in votes["public_id"].unique()})
    votes["model_a"] = votes["model_a_id"].map(model_names)
    votes["model_b"] = votes["model_b_id"].map(model_names)
    votes["left_model"] = votes["model_a"].where(votes["left_is_a"].astype(bool), votes["model_b"])
    frame = choices.merge(votes, on="vote_id", how="inner")  # inner: drops attention-check votes
    frame["criterion"] = frame["criterion_id"].map({cid: key for cid, key, _ in criteria})
    frame["winner"] = frame["outcome"].map(_WINNER)
    order = frame["criterion_id"].map({cid: pos for cid, _, pos in criteria})
    frame = frame.iloc[np.lexsort((order.to_numpy(), frame["vote_id"].to_numpy()))].reset_index(drop=True)
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
    """Every evaluator who joined, pseudonymous, with their vote count and quality-control flags.

    Counts include attention-check votes (they are votes the person cast); the vote frame does not.
    """
    rows = session.execute(
        select(Evaluator.public_id, Evaluator.created_at, Evaluator.completed_at, Evaluator.flagged,
               Evaluator.flag_reasons, func.count(Vote.id))
        .outerjoin(Vote, Vote.evaluator_id == Evaluator.id)
        .where(Evaluator.study_id == study_id)
        .group_by(Evaluator.id)
        .order_by(func.count(Vote.id).desc(), Evaluator.id)
    ).all()
    return [{"evaluator": pseudonym(public_id), "joined_at": joined, "completed_at": completed,
             "flagged": bool(flagged), "flag_reasons": list(reasons or []), "votes": int(n)}
            for public_id, joined, completed, flagged, reasons, n in rows]


def model_costs(session: Session, *, study_id: int) -> list[dict]:
    """Per model: how many done clips, how many with a recorded cost, and the median seconds per clip: wall
    time, and model time on the device (``generation.model_seconds``: GIF encoding left out).

    Medians, not means: a first clip that loads weights or compiles kernels would dominate a mean.
    Attention-check copies (variant != "") are not generations and are left out.
    """
    models = session.execute(select(StudyModel.id, StudyModel.name).where(StudyModel.study_id == study_id)
                             .order_by(StudyModel.position)).all()
    warmup = Clip.generation["warmup"].as_boolean()
    clips = session.execute(
        select(Clip.model_id, Clip.wall_seconds, Clip.denoise_seconds, Clip.decode_seconds, Clip.unet_evals,
               Clip.steps, Clip.peak_memory_bytes, warmup)
        .where(Clip.study_id == study_id, Clip.status == "done", Clip.variant == "")
    ).all()
    frame = pd.DataFrame(clips, columns=["model_id", "wall_seconds", "denoise_seconds", "decode_seconds",
                                         "unet_evals", "steps", "peak_memory_bytes", "warmup"])
    frame["warmup"] = frame["warmup"].fillna(False).astype(bool)
    # generation.model_seconds, column-wise: the model's time on the device, GIF encoding left out.
    frame["model_seconds"] = frame["denoise_seconds"] + frame["decode_seconds"].fillna(0.0)
    out = []
    for model_id, name in models:
        everything = frame[frame["model_id"] == model_id]
        # The first clip after a pipeline load (worker/generate.py "warmup") is left out of the medians, unless
        # it is all there is.
        steady = everything[~everything["warmup"]]
        mine = steady if len(steady) else everything
        timed = mine["wall_seconds"].dropna()

        def median(col: str, mine: pd.DataFrame = mine) -> float | None:
            vals = mine[col].dropna()
            return float(vals.median()) if len(vals) else None

        out.append({"model": name, "clips": int(len(everything)), "timed_clips": int(len(timed)),
                    "warmup_clips": int(everything["warmup"].sum()),
                    "median_wall_seconds": median("wall_seconds"), "median_model_seconds": median("model_seconds"),
                    "median_denoise_seconds": median("denoise_seconds"),
                    "median_unet_evals": median("unet_evals"), "median_steps": median("steps"),
                    "median_peak_memory_bytes": median("peak_memory_bytes")})
    return out


# The compression warning fires when, over the pairs of two models, one model's clip was served at the harsher
# lossy level in this many more pairs (as a share of the pairs) than the other's...
LEVEL_LEAN_SHARE = 0.1
# ... or when, level for level, one model's clips lost this much more PSNR to compression on average. A
# heuristic: the same level costs 0.6-10.3 dB depending on content (BENCHMARKS.md), and around 1 dB lossy-LZW
# streaks start to show in busy texture.
PSNR_GAP_DB = 1.0
PAIR_ROWS_SHOWN = 50


def _clip_levels(session: Session, study_id: int) -> dict[int, tuple[int, int | None, float | None]]:
    """Per real clip: (model id, lossy level, PSNR). Level 0 = stored without a lossy step; None = not
    compressed by BlindPair (imported). Clips generated before levels had their own column read the level
    from ``generation.gif_lossy_level``, where null also meant "no lossy step"."""
    # The one JSON field, extracted by the database: this runs on every dashboard view, and the whole
    # generation record (scheduler config, timesteps, versions) is kilobytes per clip.
    legacy = Clip.generation["gif_lossy_level"].as_integer()
    out: dict[int, tuple[int, int | None, float | None]] = {}
    for clip_id, model_id, origin, level, psnr, old in session.execute(
        select(Clip.id, Clip.model_id, Clip.origin, Clip.lossy_level, Clip.psnr_db, legacy)
        .where(Clip.study_id == study_id, Clip.status == "done", Clip.variant == "")
    ):
        if level is None and origin == "generated":
            level = int(old) if old is not None else 0
        out[clip_id] = (model_id, level, psnr)
    return out


def compression_by_model(session: Session, *, study_id: int) -> dict[str, Any]:
    """GIF compression per model, per prompt pair and per pair of models, and a warning where it could explain
    a preference.

    Generated clips of one prompt and seed share one lossy level (app/services/pair_encoding.py), so what can
    still differ is the PSNR each clip kept, and the levels of clips made before that rule or imported. Per
    pair of models: the pairs where each side was served at the harsher level, and the mean PSNR difference;
    the warning names the model at a disadvantage when the levels lean one way in ``LEVEL_LEAN_SHARE`` of the
    pairs or more (a clip stored without lossy compression counts as level 0), or when its clips lost
    ``PSNR_GAP_DB`` more on average.
    """
    models = session.execute(select(StudyModel.id, StudyModel.name).where(StudyModel.study_id == study_id)
                             .order_by(StudyModel.position)).all()
    name_of = dict(models)
    clips = _clip_levels(session, study_id)
    rows: list[dict[str, Any]] = []
    for model_id, name in models:
        mine = [(lv, ps) for m, lv, ps in clips.values() if m == model_id]
        levels = [lv for lv, _ in mine if lv is not None]
        psnrs = [ps for lv, ps in mine if lv and ps is not None]
        rows.append({"model": name, "clips": len(mine), "recorded": len(levels),
                     "without_lossy": sum(lv == 0 for lv in levels),
                     "median_level": float(np.median(levels)) if levels else None,
                     "median_psnr": float(np.median(psnrs)) if psnrs else None})
    clip_a, clip_b = aliased(Clip), aliased(Clip)
    pairs = session.execute(
        select(Pair.clip_a_id, Pair.clip_b_id, Prompt.external_id, clip_a.seed)
        .join(Prompt, Prompt.id == Pair.prompt_id).join(clip_a, clip_a.id == Pair.clip_a_id)
        .join(clip_b, clip_b.id == Pair.clip_b_id)
        .where(Pair.study_id == study_id, Pair.kind == "normal").order_by(Prompt.external_id, clip_a.seed)
    ).all()
    pair_rows: list[dict[str, Any]] = []
    by_models: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for a_id, b_id, prompt, seed in pairs:
        if a_id not in clips or b_id not in clips:
            continue
        (ma, la, pa), (mb, lb, pb) = clips[a_id], clips[b_id]
        row = {"prompt": prompt, "seed": seed, "model_a": name_of.get(ma), "model_b": name_of.get(mb),
               "level_a": la, "level_b": lb, "psnr_a": pa, "psnr_b": pb,
               "psnr_gap": (pa - pb) if la and lb and pa is not None and pb is not None else None}
        pair_rows.append(row)
        by_models.setdefault((ma, mb), []).append(row)
    comparisons: list[dict[str, Any]] = []
    warnings: list[str] = []
    for (ma, mb), group in by_models.items():
        known = [r for r in group if r["level_a"] is not None and r["level_b"] is not None]
        gaps = [r["psnr_gap"] for r in group if r["psnr_gap"] is not None]
        cmp = {"model_a": name_of.get(ma), "model_b": name_of.get(mb), "pairs": len(group), "known": len(known),
               "a_harsher": sum(r["level_a"] > r["level_b"] for r in known),
               "b_harsher": sum(r["level_b"] > r["level_a"] for r in known),
               "mean_psnr_gap": float(np.mean(gaps)) if gaps else None, "psnr_pairs": len(gaps)}
        comparisons.append(cmp)
        warning = _compression_warning(cmp)
        if warning:
            warnings.append(warning)
    shown = sorted(pair_rows, key=lambda r: (-abs((r["level_a"] or 0) - (r["level_b"] or 0)),
                                             -abs(r["psnr_gap"] or 0.0)))[:PAIR_ROWS_SHOWN]
    return {"models": rows, "pairs": shown, "n_pairs": len(pair_rows), "comparisons": comparisons,
            "any": any(r["recorded"] for r in rows), "warning": " ".join(warnings) or None,
            "warnings": warnings}


def _compression_warning(cmp: dict[str, Any]) -> str | None:
    """The warning for one pair of models (``compression_by_model``), or None."""
    a, b, n = cmp["model_a"], cmp["model_b"], cmp["known"]
    if n and abs(cmp["a_harsher"] - cmp["b_harsher"]) / n >= LEVEL_LEAN_SHARE:
        worse, better = (a, b) if cmp["a_harsher"] > cmp["b_harsher"] else (b, a)
        hi, lo = max(cmp["a_harsher"], cmp["b_harsher"]), min(cmp["a_harsher"], cmp["b_harsher"])
        return (f"{worse}'s clip was served at a harsher GIF lossy level than {better}'s in {hi} of {n} pairs "
                f"(the reverse in {lo}; a clip stored without lossy compression counts as level 0). A preference "
                f"for {better} could be the compression rather than the model: re-encode the clips one level per "
                f"pair (clips generated now are) or compare the results on the pairs with equal levels.")
    gap = cmp["mean_psnr_gap"]
    if gap is not None and abs(gap) >= PSNR_GAP_DB:
        worse, better = (a, b) if gap < 0 else (b, a)
        return (f"At the same lossy level, {worse}'s clips kept {abs(gap):.1f} dB less PSNR than {better}'s on "
                f"average over {cmp['psnr_pairs']} pairs: compression artefacts show more on its content, and a "
                f"preference for {better} could partly be that. Compare the pairs below.")
    return None
