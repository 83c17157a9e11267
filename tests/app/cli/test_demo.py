"""``blindpair demo --no-serve`` on a fresh database: migrated, admin, open study, clips made by a real worker
process through the embedded queue, costs recorded, pairs made; a second run changes nothing."""

from __future__ import annotations

import os
import re

from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import app
from app.db import session_scope
from app.media.gif import inspect_gif
from app.media.storage import media_path
from app.models import Batch, Clip, Pair, Prompt, Study, User
from app.services.users import authenticate

runner = CliRunner()


def _state():
    with session_scope() as s:
        study = s.scalars(select(Study).where(Study.slug == "demo")).one()
        # Real clips only: opening the study also makes degraded attention-check copies (variant != "").
        clips = s.scalars(select(Clip).where(Clip.study_id == study.id, Clip.variant == "")).all()
        return {
            "study": (study.id, study.status, [m.name for m in study.models], study.invite_token),
            "prompts": s.scalar(select(func.count()).select_from(Prompt)),
            "themes": len(set(s.scalars(select(Prompt.theme)))),
            "clips": sorted((c.id, c.status, c.origin, c.frames, c.width, c.storage_name) for c in clips),
            "costs": sorted((c.id, c.wall_seconds, c.denoise_seconds, c.encode_seconds, c.unet_evals, c.device,
                             c.claimed_by, c.batch_id) for c in clips),
            "batches": s.scalar(select(func.count()).select_from(Batch)),
            "pairs": s.scalar(select(func.count()).select_from(Pair).where(Pair.kind == "normal")),
            "all_clips": s.scalar(select(func.count()).select_from(Clip)),
            "all_pairs": s.scalar(select(func.count()).select_from(Pair)),
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
    # Made by the worker, not imported: origin, one batch, and the cost of every clip as the worker measured it.
    assert {c[1:5] for c in state["clips"]} == {("done", "generated", 4, 32)}
    assert state["batches"] == 1
    for _id, wall, render, encode, unet_evals, device, claimed_by, batch_id in state["costs"]:
        assert wall > 0 and render > 0 and encode > 0 and wall >= render
        assert unet_evals == 0 and device.startswith("cpu")  # a demo preset runs no UNet
        assert claimed_by and batch_id is not None
    # A separate process did the work: its worker identity is host:pid, and that pid is not this test's.
    assert {int(c[6].rsplit(":", 1)[1]) for c in state["costs"]} != {os.getpid()}
    assert "making demo clips" in first.output and "24/24" in first.output
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
    assert "already made" in second.output
    assert _state() == state  # nothing duplicated or re-rendered
    new_password = re.search(r"password\s+(\S+)\s+\(password reset\)", second.output).group(1)
    with session_scope() as s:
        assert authenticate(s, email="admin@demo.local", password=new_password) is not None
