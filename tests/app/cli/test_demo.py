"""``blindpair demo --no-serve`` on a fresh database: migrated, admin, open study, clips done, pairs made."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import app
from app.db import session_scope
from app.media.gif import inspect_gif
from app.media.storage import media_path
from app.models import Clip, Pair, Prompt, Study, User
from app.services.users import authenticate

runner = CliRunner()


def _state():
    with session_scope() as s:
        study = s.scalars(select(Study).where(Study.slug == "demo")).one()
        clips = s.scalars(select(Clip).where(Clip.study_id == study.id)).all()
        return {
            "study": (study.id, study.status, [m.name for m in study.models], study.invite_token),
            "prompts": s.scalar(select(func.count()).select_from(Prompt)),
            "themes": len(set(s.scalars(select(Prompt.theme)))),
            "clips": sorted((c.id, c.status, c.origin, c.frames, c.width, c.storage_name) for c in clips),
            "pairs": s.scalar(select(func.count()).select_from(Pair)),
            "admins": s.scalar(select(func.count()).select_from(User).where(User.role == "admin")),
        }


def test_demo_builds_a_ready_study_and_is_idempotent():
    args = ["demo", "--no-serve", "--frames", "4", "--size", "32", "--password", "demo-password-1"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    state = _state()
    study_id, status, models, token = state["study"]
    assert status == "open" and models == ["demo-smooth", "demo-jittery"]
    assert state["prompts"] == 12 and state["themes"] == 12
    assert len(state["clips"]) == 24
    assert {c[1:5] for c in state["clips"]} == {("done", "imported", 4, 32)}
    assert state["pairs"] == 12 and state["admins"] == 1
    assert f"/join/{token}" in first.output
    assert "admin@demo.local" in first.output and "demo-password-1" in first.output
    for clip in state["clips"][:2]:
        info = inspect_gif(media_path(clip[5]).read_bytes())
        assert info.frames == 4 and info.animated
    with session_scope() as s:
        assert authenticate(s, email="admin@demo.local", password="demo-password-1") is not None

    second = runner.invoke(app, ["demo", "--no-serve"])
    assert second.exit_code == 0, second.output
    assert "already imported" in second.output
    assert _state() == state  # nothing duplicated or re-rendered
    new_password = re.search(r"password\s+(\S+)\s+\(password reset\)", second.output).group(1)
    with session_scope() as s:
        assert authenticate(s, email="admin@demo.local", password=new_password) is not None
