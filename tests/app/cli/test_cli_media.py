"""``blindpair import-gifs`` and ``blindpair prompts`` through the real Typer app."""

from __future__ import annotations

from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import app
from app.models import Clip, Pair, Prompt
from tests.factories import NO_CHECKS, gif_bytes, make_study

runner = CliRunner()


def _count(session, model) -> int:
    # SQLite runs BEGIN IMMEDIATE, so even a read holds the write lock: end it before the CLI runs.
    n = session.scalar(select(func.count()).select_from(model))
    session.rollback()
    return n


def _fill(folder, study, **kw):
    for m in study.models:
        (folder / m.name).mkdir(parents=True, exist_ok=True)
        for p in study.prompts:
            (folder / m.name / f"{p.external_id}.gif").write_bytes(gif_bytes(**kw))


def test_import_gifs_command(session, tmp_path):
    study = make_study(session, n_prompts=2, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _fill(folder, study)
    session.commit()
    slug, study_id = study.slug, study.id
    result = runner.invoke(app, ["import-gifs", str(folder), "--study", slug])
    assert result.exit_code == 0, result.output
    assert "4 new, 0 replaced, 0 unchanged; 2 new pair(s)" in result.output
    assert _count(session, Pair) == 2

    again = runner.invoke(app, ["import-gifs", str(folder), "--study", str(study_id)])
    assert again.exit_code == 0 and "0 new, 0 replaced, 4 unchanged; 0 new pair(s)" in again.output


def test_import_gifs_refusal_prints_the_mismatch_table(session, tmp_path):
    study = make_study(session, models=("fast", "slow"), n_prompts=2, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _fill(folder, study, frames=8)
    session.commit()
    (folder / "slow" / "p001.gif").write_bytes(gif_bytes(frames=5))
    result = runner.invoke(app, ["import-gifs", str(folder), "--study", str(study.id)])
    assert result.exit_code == 1
    out = result.output
    assert "Import refused" in out and "No clip was added" in out
    assert "slow/p001.gif" in out and "frames 5 vs 8" in out
    assert _count(session, Clip) == 0


def test_import_gifs_unknown_study(engine, tmp_path):
    result = runner.invoke(app, ["import-gifs", str(tmp_path), "--study", "nope"])
    assert result.exit_code == 1 and "no study 'nope'" in result.output


def test_prompts_import_command_all_or_nothing(session, tmp_path):
    study = make_study(session, n_prompts=1, qc=NO_CHECKS)
    session.commit()
    slug, study_id = study.slug, study.id
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text,theme\nx1,A cat jumps,pets\nx1,A dog jumps,pets\nx3,,pets\n")
    result = runner.invoke(app, ["prompts", "import", str(bad), "--study", str(study_id)])
    assert result.exit_code == 1
    assert "line 3:" in result.output and "line 4:" in result.output
    assert _count(session, Prompt) == 1

    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "x1", "text": "A cat jumps onto a fence", "theme": "pets", "tags": ["animals"]}\n')
    result = runner.invoke(app, ["prompts", "import", str(good), "--study", slug])
    assert result.exit_code == 0, result.output
    assert "Added 1 prompt(s)" in result.output
    result = runner.invoke(app, ["prompts", "import", str(good), "--study", slug])
    assert result.exit_code == 1 and "already in study" in result.output


def test_prompts_themes_and_check(tmp_path):
    result = runner.invoke(app, ["prompts", "themes"])
    assert result.exit_code == 0 and "mystical realms" in result.output and "100 prompts" in result.output
    f = tmp_path / "p.csv"
    f.write_text("id,text,theme\na,A kite climbs into the wind,sky\n")
    result = runner.invoke(app, ["prompts", "check", str(f)])
    assert result.exit_code == 0 and "8/77" in result.output
