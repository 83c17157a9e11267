"""Several "machines" sharing only the database, the broker and a bucket: real ``blindpair worker`` processes,
each with a media folder of its own that nobody else reads, a real web server, and a real SeaweedFS that is
killed mid-batch. Slow (worker processes): marked ``slow`` as well as ``s3``. The same setup rated in Chromium:
tests/browser/test_storage_browser.py."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from app.models import Clip, Pair
from app.services import generation as gen
from app.services import storage as svc
from tests.factories import NO_CHECKS, make_study
from tests.support.seaweed_fixtures import _reset
from tests.worker.test_celery_worker import Worker, all_served, migrated_session, statuses  # noqa: F401 - a fixture

DEMO = ("demo-smooth", "demo-jittery")
WORKER_ENV = {"BLINDPAIR_WORKER_PRELOAD": "0", "BLINDPAIR_STORAGE_UPLOAD_WAIT_SECONDS": "120",
              "BLINDPAIR_STORAGE_TIMEOUT_SECONDS": "2", "BLINDPAIR_WORKER_RETRY_BACKOFF_SECONDS": "1"}


def demo_study(session, n_prompts: int, **settings):
    study = make_study(session, models=("model-0", "model-1"), n_prompts=n_prompts, qc=NO_CHECKS,
                       pairs_per_session=3, votes_per_pair=1)
    for model, preset in zip(study.models, DEMO, strict=True):
        model.preset = preset
    study.settings = {**study.settings, **settings}
    session.commit()
    return study


def start_workers(tmp_path, names):
    folders = {name: tmp_path / f"media-{name}" for name in names}
    return [Worker(tmp_path, name, {**WORKER_ENV, "BLINDPAIR_MEDIA_DIR": str(folder)})
            for name, folder in folders.items()], folders


def wait(predicate, workers, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        for w in workers:
            if w.proc.poll() is not None:
                pytest.fail(f"a worker exited with {w.proc.returncode}:\n{w.tail()}")
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {seconds} s; worker logs:\n" + "\n".join(w.tail() for w in workers))


def all_done(session, study_id):
    return lambda: all_served(session, study_id)


def no_local_gifs(folders) -> bool:
    return not any(f.exists() and any(f.glob("*.gif")) for f in folders.values())


@pytest.mark.slow
def test_a_store_killed_mid_batch_loses_nothing_and_the_site_recovers(migrated_session, own_seaweed,  # noqa: F811
                                                                     tmp_path, client):
    session = migrated_session
    server, _env = own_seaweed
    study = demo_study(session, n_prompts=10, frames=16, width=96, height=96)
    gen.queue_batch(session, study_id=study.id)
    session.commit()
    workers, folders = start_workers(tmp_path, ["a"])
    try:
        def served() -> bool:  # a GIF clip is served once both clips of its prompt are done (per-pair encoding)
            found = session.scalars(select(Clip.id).where(Clip.study_id == study.id, Clip.status == "done",
                                                          Clip.storage_name.is_not(None))).first()
            session.rollback()
            return found is not None

        wait(served, workers, 120, "a first served clip")
        server.stop()  # SIGKILL, mid-batch: uploads in flight fail
        killed_at = statuses(session, study.id)
        token = session.scalars(select(Clip.media_token).where(Clip.study_id == study.id, Clip.status == "done",
                                                               Clip.storage_name.is_not(None))).first()
        session.rollback()  # SQLite: no transaction of the test may hold the workers' writes up
        r = client.get(f"/m/{token}")
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        time.sleep(6)  # the worker finishes clips it cannot upload, and keeps them
        while_down = statuses(session, study.id)
        assert "failed" not in while_down.values()
        # Nothing recorded while the store was down: no clip points at an object that is not whole in it.
        assert [c for c, s in while_down.items() if s == "done"] == [c for c, s in killed_at.items() if s == "done"]
        server.start()
        wait(all_done(session, study.id), workers, 240, "every clip done after the store came back")
    finally:
        for w in workers:
            w.stop()
    _reset()
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id)).all()
    assert len(clips) == 20 and {c.storage for c in clips} == {"s3"}
    assert len({c.storage_name for c in clips}) == 20  # none counted twice
    report = svc.check_storage(session, study_id=study.id)
    assert report.ok and report.checked == 20, report  # every object whole, with its recorded hash
    assert session.query(Pair).filter_by(study_id=study.id).count() == 10
    session.rollback()
    assert client.get(f"/m/{token}").status_code == 200
    assert no_local_gifs(folders)
