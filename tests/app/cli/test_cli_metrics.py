"""``blindpair metrics compute|show`` and the metrics ``import-gifs`` computes, through the real Typer app."""

from __future__ import annotations

from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import app
from app.models import ClipMetric
from tests.app.cli.test_cli_media import _fill
from tests.factories import NO_CHECKS, make_pairs, make_study

runner = CliRunner()


def _metric_rows(session) -> int:
    n = session.scalar(select(func.count(ClipMetric.id)))
    session.rollback()  # SQLite: the read holds the write lock the CLI needs
    return n


def test_metrics_compute_measures_missing_clips_then_nothing_then_all_with_force(session):
    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    session.commit()
    slug, study_id = study.slug, study.id
    session.rollback()  # SQLite: reading the attributes back opened a transaction the CLI would wait for
    result = runner.invoke(app, ["metrics", "compute", slug])
    assert result.exit_code == 0, result.output
    assert "4 clip(s) measured" in result.output
    rows = _metric_rows(session)
    assert rows >= 4 * 5
    again = runner.invoke(app, ["metrics", "compute", str(study_id)])
    assert again.exit_code == 0 and "0 clip(s) measured" in again.output
    forced = runner.invoke(app, ["metrics", "compute", str(study_id), "--force"])
    assert "4 clip(s) measured" in forced.output and _metric_rows(session) == rows
    shown = runner.invoke(app, ["metrics", "show", str(study_id)])
    assert shown.exit_code == 0 and "4 of 4 clips measured" in shown.output and "lightning" in shown.output


def test_metrics_compute_unknown_study(engine):
    result = runner.invoke(app, ["metrics", "compute", "nope"])
    assert result.exit_code == 1 and "no study 'nope'" in result.output


def test_import_gifs_computes_the_metrics_unless_told_not_to(session, tmp_path):
    study = make_study(session, n_prompts=1, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _fill(folder, study)
    session.commit()
    study_id = study.id
    session.rollback()
    skipped = runner.invoke(app, ["import-gifs", str(folder), "--study", str(study_id), "--no-metrics"])
    assert skipped.exit_code == 0, skipped.output
    assert "2 new" in skipped.output and _metric_rows(session) == 0
    # Importing again changes no clip but measures the two that have no metrics yet.
    result = runner.invoke(app, ["import-gifs", str(folder), "--study", str(study_id)])
    assert result.exit_code == 0, result.output
    assert "2 unchanged" in result.output and "2 clip(s) measured" in result.output
    assert _metric_rows(session) >= 2 * 5
