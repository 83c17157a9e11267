"""``blindpair study create --pair-selection`` and ``study qc --set pair_selection=...`` (issue 13)."""

from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import app
from app.db import session_scope
from app.models import Study

runner = CliRunner()
MODELS = ["--model", "a", "--model", "b", "--model", "c", "--theme", "nature"]


def test_adaptive_selection_from_the_cli_and_a_bad_value_makes_nothing(migrated):
    r = runner.invoke(app, ["study", "create", "--name", "Three", *MODELS, "--pair-selection", "thompson"])
    assert r.exit_code == 1 and "pair_selection must be one of least_voted, adaptive, arena_eq9" in r.output
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Study)) == 0
    r = runner.invoke(app, ["study", "create", "--name", "Three", *MODELS, "--pair-selection", "adaptive"])
    assert r.exit_code == 0, r.output
    with session_scope() as s:
        study_id = s.scalars(select(Study.id)).one()
    r = runner.invoke(app, ["study", "qc", str(study_id)])
    assert "pair_selection = adaptive" in r.output
    r = runner.invoke(app, ["study", "qc", str(study_id), "--set", "pair_selection=least_voted"])
    assert r.exit_code == 0 and "pair_selection = least_voted" in r.output
