"""Attention-check copies are decoded, degraded, encoded and stored while other writers can write (issue 12:
long work held SQLite's write lock, and every vote and login waited behind it), and a race with another
process making copies leaves one copy of each kind per source and no stray files."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.media.storage import media_root
from app.models import Clip, Pair
from app.services import attention
from app.services.attention import CHECK_KINDS, DEGRADED_ORIGIN, DUPLICATE_VARIANT, ensure_attention_pairs
from app.services.studies import set_qc, set_status
from tests.factories import make_pairs, make_study
from tests.support.sqlite import write_lock_is_free


@pytest.fixture
def probed(engine, monkeypatch):
    """Every copy made records whether another connection could have written at that moment."""
    seen: list[bool] = []
    for name in ("degrade_gif", "duplicate_gif"):
        original = getattr(attention, name)

        def probing(*args, _original=original, **kwargs):
            seen.append(write_lock_is_free(engine.url.database))
            return _original(*args, **kwargs)

        monkeypatch.setattr(attention, name, probing)
    return seen


def _study(status: str, qc: dict | None = None) -> int:
    with session_scope() as s:
        study = make_study(s, n_prompts=4, status=status, **({"qc": qc} if qc else {}))
        make_pairs(s, study)
        return study.id


def _check_state(study_id: int) -> tuple[int, int]:
    with session_scope() as s:
        pairs = s.scalar(select(func.count(Pair.id)).where(Pair.study_id == study_id, Pair.kind.in_(CHECK_KINDS)))
        copies = s.scalar(select(func.count(Clip.id)).where(Clip.study_id == study_id,
                                                            Clip.origin == DEGRADED_ORIGIN))
    return pairs, copies


def test_opening_a_study_makes_its_checks_outside_the_write_lock(engine, probed):
    study_id = _study("draft")
    with session_scope() as s:
        set_status(s, study_id=study_id, status="open")
    assert probed and all(probed), "copies were made while the write lock was held"
    pairs, copies = _check_state(study_id)
    assert pairs >= 2 and pairs == copies  # one pair per copy


def test_switching_qc_on_makes_its_checks_outside_the_write_lock(engine, probed):
    study_id = _study("open", qc={"enabled": False})
    assert _check_state(study_id) == (0, 0)
    with session_scope() as s:
        set_qc(s, study_id=study_id, changes={"enabled": True})
    assert probed and all(probed)
    assert _check_state(study_id)[0] >= 2


def test_a_rolled_back_change_makes_no_checks(engine, probed):
    study_id = _study("draft")
    with pytest.raises(RuntimeError), session_scope() as s:
        set_status(s, study_id=study_id, status="open")
        raise RuntimeError("the request failed after opening the study")
    assert probed == [] and _check_state(study_id) == (0, 0)


def test_copies_made_meanwhile_by_another_process_are_not_doubled(engine, monkeypatch):
    study_id = _study("open")
    original = attention.degrade_gif
    raced = []

    def racing_degrade(*args, **kwargs):
        if not raced:  # another worker makes the study's checks while this one is still encoding
            raced.append(1)
            with session_scope() as s:
                ensure_attention_pairs(s, study_id=study_id, n_sources=3)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "degrade_gif", racing_degrade)
    attention.make_attention_checks(study_id=study_id, n_sources=3)
    with session_scope() as s:
        copies = s.scalars(select(Clip).where(Clip.study_id == study_id, Clip.origin == DEGRADED_ORIGIN)).all()
        kinds = [(c.source_clip_id, c.variant == DUPLICATE_VARIANT) for c in copies]
        assert len(kinds) == len(set(kinds)), "two copies of one kind for one source"
        stored = {c.storage_name for c in s.scalars(select(Clip))}
    on_disk = {p.name for p in media_root().iterdir() if not p.name.startswith(".")}
    assert on_disk == stored, "files of copies that were not kept are left behind"
