"""Pairs: as soon as every model of a study has a done clip for a prompt and seed, each model pair is made."""

from __future__ import annotations

import itertools
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Clip, Pair, Study, StudyModel


def ensure_pairs(session: Session, *, study_id: int, prompt_id: int | None = None) -> int:
    """Create every missing normal pair of the study (or of one prompt); returns how many were created.

    A prompt/seed gets pairs only when every model of the study has a done real clip for it (so evaluators
    never see a prompt with only some of its comparisons). With three or more models every model pair is made;
    ``clip_a`` is the clip of the model with the lower ``position``. Safe to call again and from concurrent
    workers: existing pairs are skipped and a pair inserted meanwhile by another transaction is ignored.
    """
    # Serialise pair-making per study. Without it, on PostgreSQL (READ COMMITTED) two workers finishing the
    # last two clips of a prompt each looked for the other's clip before it was committed, and neither made
    # the pair. NO KEY UPDATE does not block inserts that merely reference the study (votes, clips).
    # SQLite ignores it: BEGIN IMMEDIATE (app/db.py) already runs writers one at a time.
    session.execute(select(Study.id).where(Study.id == study_id).with_for_update(key_share=True))
    models = list(session.scalars(
        select(StudyModel).where(StudyModel.study_id == study_id).order_by(StudyModel.position, StudyModel.id)
    ))
    if len(models) < 2:
        return 0
    order = {m.id: i for i, m in enumerate(models)}

    query = select(Clip.id, Clip.prompt_id, Clip.seed, Clip.model_id).where(
        Clip.study_id == study_id, Clip.status == "done", Clip.variant == "",
        # A generated clip is served (and paired) once its group shares one lossy level (pair_encoding.py).
        Clip.storage_name.is_not(None),
    )
    if prompt_id is not None:
        query = query.where(Clip.prompt_id == prompt_id)
    groups: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    for clip_id, p_id, seed, model_id in session.execute(query):
        groups[(p_id, seed)][model_id] = clip_id

    existing_q = select(Pair.clip_a_id, Pair.clip_b_id).where(Pair.study_id == study_id, Pair.kind == "normal")
    if prompt_id is not None:
        existing_q = existing_q.where(Pair.prompt_id == prompt_id)
    existing = {tuple(row) for row in session.execute(existing_q)}

    created = 0
    for (p_id, _seed), by_model in sorted(groups.items()):
        if len(by_model) < len(models) or any(m.id not in by_model for m in models):
            continue
        for model_a, model_b in itertools.combinations(sorted(by_model, key=order.__getitem__), 2):
            a, b = by_model[model_a], by_model[model_b]
            if (a, b) in existing:
                continue
            try:
                # A savepoint per insert: a concurrent worker may have made the same pair (unique clip_a/clip_b).
                with session.begin_nested():
                    session.add(Pair(study_id=study_id, prompt_id=p_id, clip_a_id=a, clip_b_id=b, kind="normal"))
            except IntegrityError:
                continue
            existing.add((a, b))
            created += 1
    return created
