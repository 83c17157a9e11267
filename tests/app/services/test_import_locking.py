"""An import reads, checks and re-encodes its files without holding SQLite's write lock (issue 12: an import
stalled /login for 20 s), and a clip that changes between the check and the write refuses the import."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.cli.media import run_import
from app.db import session_scope
from app.media.storage import store_bytes
from app.models import Clip
from app.services import clips
from tests.factories import NO_CHECKS, gif_bytes, make_study
from tests.support.sqlite import write_lock_is_free


def _folder(tmp_path, study):
    folder = tmp_path / "gifs"
    for m in study.models:
        (folder / m.name).mkdir(parents=True)
        for p in study.prompts:
            (folder / m.name / f"{p.external_id}.gif").write_bytes(gif_bytes())
    return folder



@pytest.fixture
def study_ids(engine):
    with session_scope() as s:
        study = make_study(s, models=("fast", "slow"), n_prompts=2, qc=NO_CHECKS)
        return study.id, [(m.id, m.name) for m in study.models], [p.id for p in study.prompts], study


def test_files_are_checked_while_others_can_write(engine, study_ids, tmp_path, monkeypatch):
    study_id, _models, _prompts, study = study_ids
    folder = _folder(tmp_path, study)
    seen: list[bool] = []
    inspect = clips.inspect_gif

    def probing_inspect(data):
        seen.append(write_lock_is_free(engine.url.database))
        return inspect(data)

    monkeypatch.setattr(clips, "inspect_gif", probing_inspect)
    result = run_import(study_id, folder, show_progress=False)
    assert seen and all(seen), "the write lock was held while the files were being checked"
    assert result.created == 4
    with session_scope() as s:
        assert s.scalar(select(func.count(Clip.id))) == 4


def test_a_clip_made_meanwhile_refuses_the_import(engine, study_ids, tmp_path, monkeypatch):
    study_id, models, prompts, study = study_ids
    folder = _folder(tmp_path, study)
    inspect = clips.inspect_gif
    calls = []

    def racing_inspect(data):
        if not calls:  # a worker finishes the clip of the first file while the import is still checking
            stored = store_bytes(gif_bytes(colour=(0, 200, 0)))
            with session_scope() as s:
                s.add(Clip(study_id=study_id, model_id=models[0][0], prompt_id=prompts[0], seed=0, variant="",
                           origin="generated", status="done", storage_name=stored.storage_name,
                           sha256=stored.sha256, size_bytes=stored.size_bytes, width=32, height=32, frames=4,
                           fps=8))
        calls.append(1)
        return inspect(data)

    monkeypatch.setattr(clips, "inspect_gif", racing_inspect)
    with pytest.raises(clips.ClipImportError) as info:
        clips.run_gif_import(study_id=study_id, folder=folder)
    assert any("changed while the files were being checked" in e for e in info.value.errors), info.value.errors
    with session_scope() as s:
        assert s.scalar(select(func.count(Clip.id))) == 1  # only the worker's clip
