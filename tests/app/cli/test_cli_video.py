"""``blindpair study create`` with a video format and optional answers; refusals change nothing."""

from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import app
from app.db import session_scope
from app.models import Study

runner = CliRunner()


def test_study_create_with_mp4_and_optional_answers(migrated):
    r = runner.invoke(app, ["study", "create", "--name", "Videos", "--model", "a", "--model", "b", "--theme",
                            "nature", "--clip-format", "mp4", "--both-bad", "--reason-tag", "blurry",
                            "--reason-tag", "flicker", "--comment", "optional"])
    assert r.exit_code == 0, r.output
    with session_scope() as s:
        study = s.scalars(select(Study)).one()
        assert study.settings["clip_format"] == "mp4"
        assert study.answer_options == {"both_bad": True, "reason_tags": ["blurry", "flicker"],
                                        "tags_required": False, "comment": "optional"}


def test_bad_format_or_answer_options_are_refused_and_nothing_is_made(migrated):
    r = runner.invoke(app, ["study", "create", "--name", "Videos", "--model", "a", "--model", "b", "--theme",
                            "nature", "--clip-format", "avi", "--comment", "sometimes"])
    assert r.exit_code == 1
    assert "clip_format must be one of gif, mp4, webm" in r.output
    assert "comment must be one of off, optional, required" in r.output
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Study)) == 0
