"""Real Celery worker processes (``blindpair worker``) generating a queued batch of tiny clips.

Every wait below has a generous deadline only so that a broken worker fails the test instead of hanging it.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from app import db
from app.media.storage import media_path
from app.migrate import upgrade
from app.models import Clip, Pair
from app.services import generation as svc
from tests.worker.conftest import make_tiny_study

BLINDPAIR = str(Path(sys.executable).with_name("blindpair"))
FAST_LEASE = {
    "BLINDPAIR_WORKER_HEARTBEAT_SECONDS": "0.5",
    "BLINDPAIR_WORKER_LEASE_SECONDS": "4",
    "BLINDPAIR_WORKER_SWEEP_SECONDS": "1",
    "BLINDPAIR_WORKER_VISIBILITY_TIMEOUT": "6",
    "HF_HUB_OFFLINE": "1",
}


@pytest.fixture
def migrated_session(tmp_path):
    upgrade()  # the worker refuses a database that is not migrated, as it should
    session = db.get_sessionmaker()()
    yield session
    session.close()


class Worker:
    def __init__(self, tmp_path: Path, name: str, extra_env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        env = {**os.environ, **FAST_LEASE, **(extra_env or {})}
        self.log = tmp_path / f"worker-{name}.log"
        self.proc = subprocess.Popen(
            [BLINDPAIR, "worker", "--device", "cpu", "--loglevel", "info", *args],
            env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: no chance to finish or requeue anything
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def statuses(session, study_id: int) -> dict[int, str]:
    session.rollback()  # a fresh snapshot (and no open SQLite write transaction)
    result = dict(session.execute(select(Clip.id, Clip.status).where(Clip.study_id == study_id)).all())
    session.rollback()
    return result


def all_served(session, study_id: int) -> bool:
    """Every clip done and served. "done" alone is not the end: a clip is recorded with its master first, and its
    served copy is written when its prompt's group is encoded, right after (app/services/pair_encoding.py)."""
    session.rollback()
    rows = session.execute(select(Clip.status, Clip.storage_name).where(Clip.study_id == study_id)).all()
    session.rollback()
    return bool(rows) and all(status == "done" and name for status, name in rows)


def wait_for(predicate, worker: Worker, deadline_s: float = 240, worker_alive_check: bool = True) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        if worker_alive_check and worker.proc.poll() is not None:
            pytest.fail(f"the worker exited with {worker.proc.returncode}:\n{worker.tail()}")
        time.sleep(0.05)
    pytest.fail(f"the batch did not finish; worker log:\n{worker.tail()}")


def assert_batch_complete(session, study, n_prompts: int) -> None:
    session.rollback()
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id, Clip.origin == "generated")).all()
    assert len(clips) == n_prompts * 2
    assert {(c.model_id, c.prompt_id, c.seed) for c in clips} == {
        (m.id, p.id, 0) for m in study.models for p in study.prompts}
    for clip in clips:
        assert clip.status == "done", clip.error
        assert Image.open(io.BytesIO(media_path(clip.storage_name).read_bytes())).n_frames == 2
        assert clip.unet_evals in (2, 4) and clip.wall_seconds > 0
    assert len({c.storage_name for c in clips}) == len(clips)
    assert session.query(Pair).filter_by(kind="normal").count() == n_prompts
    session.rollback()


def run_batch(session, tmp_path, tiny_model_dir, extra_env=None, worker_args: tuple[str, ...] = ()) -> None:
    study = make_tiny_study(session, tiny_model_dir, n_prompts=2)
    result = svc.queue_batch(session, study_id=study.id)
    assert result.tasks_sent == 4
    worker = Worker(tmp_path, "a", extra_env, args=worker_args)
    try:
        wait_for(lambda: all_served(session, study.id), worker)
    finally:
        worker.stop()
    assert_batch_complete(session, study, 2)
    # One worker process loaded each model's pipeline once and reused it for the model's other clip.
    loads = session.scalars(select(Clip.generation).where(Clip.study_id == study.id)).all()
    session.rollback()
    assert sorted(g["pipeline_loaded_for_this_clip"] for g in loads) == [False, False, True, True]


@pytest.mark.slow
def test_a_worker_generates_a_batch(migrated_session, tmp_path, tiny_model_dir, broker_env):
    run_batch(migrated_session, tmp_path, tiny_model_dir, broker_env)


@pytest.mark.slow
def test_a_worker_with_two_clips_in_flight_generates_a_batch(migrated_session, tmp_path, tiny_model_dir):
    # --concurrency 2: clips in threads over one cached pipeline. Every clip once, each its own file, and each
    # model's pipeline still loaded once (the clips share the process's cache).
    run_batch(migrated_session, tmp_path, tiny_model_dir, worker_args=("--concurrency", "2"))


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(migrated_session, tmp_path, tiny_model_dir,
                                                                broker_env):
    session = migrated_session
    n_prompts = 3
    study = make_tiny_study(session, tiny_model_dir, n_prompts=n_prompts)
    svc.queue_batch(session, study_id=study.id)
    first = Worker(tmp_path, "first", broker_env)
    try:
        # Kill while the second clip runs: it is the other model's, so the worker is loading a second pipeline.
        wait_for(lambda: "done" in (s := statuses(session, study.id)).values() and "running" in s.values(), first)
        first.kill()
    finally:
        first.stop()
    killed = [cid for cid, status in statuses(session, study.id).items() if status == "running"]
    # The kill landed mid-clip: that clip is left "running" under a lease nobody renews.
    assert len(killed) == 1 and "queued" in statuses(session, study.id).values()
    second = Worker(tmp_path, "second", broker_env)
    try:
        wait_for(lambda: all_served(session, study.id), second)
    finally:
        second.stop()
    assert_batch_complete(session, study, n_prompts)
    session.rollback()
    for clip_id in killed:  # the clip the first worker died on was taken back once and finished by the second
        clip = session.get(Clip, clip_id)
        assert clip.attempts == 2 and "second" not in clip.claimed_by
    session.rollback()
