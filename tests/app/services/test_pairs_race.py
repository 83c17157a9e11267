"""Two workers finishing the two clips of one prompt at the same moment still make the prompt's pair."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text

from app import db
from app.media.storage import store_bytes
from app.models import Clip, Pair
from app.services import generation as svc
from tests.factories import NO_CHECKS, gif_bytes, make_study


def _result():
    return SimpleNamespace(width=32, height=32, frames=4, fps=8.0, wall_seconds=1.0, denoise_seconds=1.0,
                           decode_seconds=0.0, encode_seconds=0.0, steps=4, guidance_scale=1.0, unet_evals=4,
                           peak_memory_bytes=None, device="cpu", dtype="float32", generation={})


@pytest.mark.postgres
@pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)
def test_concurrent_completions_of_one_prompt_make_its_pair(session):
    # Under READ COMMITTED each completion used to look for the other model's clip before the other had
    # committed: both saw one model done, neither made the pair, and the prompt was never rated.
    # (SQLite is not at risk: BEGIN IMMEDIATE runs the two completions one after the other.)
    study = make_study(session, n_prompts=1, qc=NO_CHECKS)
    prompt = study.prompts[0]
    ids = []
    for i, model in enumerate(study.models):
        clip = Clip(study_id=study.id, model_id=model.id, prompt_id=prompt.id, seed=0, origin="generated",
                    status="running", claimed_by=f"w{i}")
        session.add(clip)
        session.flush()
        ids.append(clip.id)
    session.commit()
    stored = [store_bytes(gif_bytes()) for _ in ids]

    first = db.get_sessionmaker()()
    assert svc.complete_clip(first, clip_id=ids[0], worker="w0", result=_result(), stored=stored[0])

    def second() -> None:
        with db.session_scope() as s:
            s.execute(text("SET application_name = 'second-completion'"))
            assert svc.complete_clip(s, clip_id=ids[1], worker="w1", result=_result(), stored=stored[1])

    thread = threading.Thread(target=second)
    thread.start()
    # Let the second completion run as far as it can while the first is uncommitted: to its end (the bug), or
    # until it waits on a lock the first holds (the fix). Polled, not timed.
    # Autocommit: inside one transaction pg_stat_activity is a snapshot and would never show the wait.
    deadline = time.monotonic() + 120  # a safety net against a hung run, not a timing assertion
    with db.get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as watch:
        while thread.is_alive() and not watch.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'second-completion' "
                "AND wait_event_type = 'Lock'")):
            assert time.monotonic() < deadline, "the second completion neither finished nor waited on a lock"
            time.sleep(0.01)
    first.commit()
    first.close()
    thread.join()
    session.expire_all()
    assert session.scalar(select(func.count(Pair.id)).where(Pair.kind == "normal")) == 1
