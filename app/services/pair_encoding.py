"""One lossy GIF level for every clip of a prompt and seed, so that a pair differs by model and not by compression.

Each generated clip is stored first as its uncompressed master (``Clip.master_name``) with the mildest gifsicle
level at which it alone would fit the page budget (``Clip.fit_level``); it is not served yet (``storage_name``
stays empty, so neither pairing nor the attention checks pick it). When every model of the study has its clip
for the prompt and seed, the group's level is the harshest of their fit levels, and each clip's served copy
is derived from its master at that level (worker/pair_encoding.py encodes, outside any transaction). Only then
are the clips served, paired and used for attention checks, whose copies are made from the served file and so
carry its level.

Why the harshest fit, not a level per clip that equalises PSNR: one encoder setting for both sides is a
treatment that can be stated and repeated; levels chosen per clip to match PSNR would again depend on content
(the very thing that made the levels differ), could need a milder level than a clip's budget allows, and equal
PSNR is not equal visibility of the artefacts. The PSNR each clip keeps (``Clip.psnr_db``) shows what is left,
and the results page compares it per pair and per model. The harshest fit also keeps every clip within the
budget, since a stronger level never makes a file larger in practice (worker/gif.py bisects on that).

With three or more models the level is the harshest over all of them: every model pair of the prompt is then
compared at one level, and a model's clips are served at one level whichever rival they face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from app.models import Clip, StudyModel


@dataclass(frozen=True)
class Member:
    clip_id: int
    master_name: str
    fit_level: int
    served_level: int | None  # the level its served file has now (None: not served yet)
    storage_name: str | None
    store: str = "local"  # where the master is, and where the served copy goes (app/media/storage.py)


@dataclass(frozen=True)
class GroupPlan:
    """What a complete group needs: its level, and the clips whose served copy is missing or at another level."""

    study_id: int
    prompt_id: int
    seed: int
    level: int
    to_encode: tuple[Member, ...]


@dataclass(frozen=True)
class Encoded:
    clip_id: int
    master_name: str  # the master it was made from: a clip regenerated meanwhile is not overwritten
    storage_name: str
    sha256: str
    size_bytes: int
    psnr_db: float | None
    encode_seconds: float
    store: str = "local"


@dataclass
class Recorded:
    updated: list[int] = field(default_factory=list)
    # files written for nothing, or replaced: delete them (name, store)
    unused_files: list[tuple[str, str]] = field(default_factory=list)
    pairs_created: int = 0


def group_level(fit_levels: Sequence[int | None]) -> int:
    """The group's lossy level: the harshest fit of its clips (0, no lossy step, when none needs one)."""
    return max((lv or 0 for lv in fit_levels), default=0)


def plan_group(session: Session, *, clip_id: int) -> GroupPlan | None:
    """The encoding a clip's group needs, or None while a model's clip of the prompt and seed is not done.

    Clips without a master (imported, or generated before masters were kept) take no part: they are served as
    they are, and the results page counts them as not compressed by BlindPair.
    """
    clip = session.get(Clip, clip_id)
    if clip is None or clip.variant != "":
        return None
    models = set(session.scalars(select(StudyModel.id).where(StudyModel.study_id == clip.study_id)))
    rows = session.scalars(select(Clip).where(
        Clip.study_id == clip.study_id, Clip.prompt_id == clip.prompt_id, Clip.seed == clip.seed,
        Clip.variant == "", Clip.status == "done")).all()
    if {c.model_id for c in rows} != models:
        return None
    mastered = [c for c in rows if c.master_name is not None]
    level = group_level([c.fit_level for c in mastered])
    to_encode = tuple(
        Member(c.id, c.master_name, c.fit_level or 0, c.lossy_level if c.storage_name else None, c.storage_name,
               c.storage)
        for c in mastered if c.master_name is not None and (c.storage_name is None or c.lossy_level != level))
    return GroupPlan(clip.study_id, clip.prompt_id, clip.seed, level, to_encode)


def record_group(session: Session, *, plan: GroupPlan, encoded: Sequence[Encoded]) -> Recorded:
    """Serve the encoded copies (one conditional UPDATE each), then pair the group and schedule its checks.

    A copy is recorded only if its clip still has the master it was made from and is not already served at
    the plan's level (another worker finished the same group first: its identical copy stays). Flushes; the
    caller commits.
    """
    out = Recorded()
    for item in encoded:
        old_row = session.execute(select(Clip.storage_name, Clip.storage).where(Clip.id == item.clip_id)).first()
        result = session.execute(
            update(Clip).where(Clip.id == item.clip_id, Clip.master_name == item.master_name,
                               Clip.status == "done",
                               (Clip.storage_name.is_(None)) | (Clip.lossy_level != plan.level)
                               | Clip.lossy_level.is_(None))
            .values(storage_name=item.storage_name, sha256=item.sha256, size_bytes=item.size_bytes,
                    lossy_level=plan.level, psnr_db=item.psnr_db,
                    # The pair's encode is GIF work like the master's: the cost table keeps it in encode time.
                    encode_seconds=func.coalesce(Clip.encode_seconds, 0.0) + item.encode_seconds),
            execution_options={"synchronize_session": False})
        if not isinstance(result, CursorResult):  # an UPDATE always gives one
            raise TypeError("expected a CursorResult from UPDATE")
        if result.rowcount:
            out.updated.append(item.clip_id)
            if old_row is not None and old_row.storage_name:
                out.unused_files.append((old_row.storage_name, old_row.storage))
        else:
            out.unused_files.append((item.storage_name, item.store))
    from app.services.attention import schedule_attention_checks
    from app.services.pairs import ensure_pairs

    out.pairs_created = ensure_pairs(session, study_id=plan.study_id, prompt_id=plan.prompt_id)
    schedule_attention_checks(session, study_id=plan.study_id)
    session.flush()
    return out


def waiting_clips(session: Session, *, limit: int = 100) -> list[int]:
    """Done clips with a master that are not served yet: their group is incomplete, or a worker died between
    recording the clip and serving its group (the sweeper passes these to worker/pair_encoding.py again)."""
    return list(session.scalars(
        select(Clip.id).where(Clip.status == "done", Clip.master_name.is_not(None), Clip.storage_name.is_(None),
                              Clip.variant == "").order_by(Clip.id).limit(limit)))
