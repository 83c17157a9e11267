"""The Redis broker goes down and comes back (issue 5, reliability): rating goes on, queuing says the broker is
unreachable and changes nothing, and the clips queued before the outage are all made once it is back.

Real redis-server processes on one loopback port, a migrated SQLite database, the real web app for the
evaluator and a real ``blindpair worker`` process. Clips use the demo presets (no weights, CPU only). Waits
have deadlines only so that a broken worker fails the test instead of hanging it.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app import config
from app.cli import app as cli
from app.db import session_scope
from app.main import create_app
from app.media.storage import media_path, media_root
from app.migrate import upgrade
from app.models import Batch, Clip, Pair, Study, Vote
from app.services import generation as svc
from tests.factories import NO_CHECKS, make_pairs, make_study
from tests.support.servers import free_port, redis_server, redis_unavailable_reason
from tests.worker.test_celery_worker import Worker, all_served, wait_for
from worker.celery_app import QUEUE

pytestmark = [pytest.mark.redis, pytest.mark.slow]

N_PROMPTS = 3
N_MODELS = 2
QUEUED_SEED = 1  # make_pairs already made seed 0's clips (done, with their pairs); this seed is queued
OUTAGE_SEED = 2  # asked for while the broker is down: must be refused without a trace
runner = CliRunner()


@pytest.fixture(autouse=True)
def _needs_redis():
    reason = redis_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def study_id() -> int:
    """An open demo study whose seed-0 clips are done and paired, so evaluators have something to rate."""
    upgrade()  # the worker refuses a database that is not migrated
    with session_scope() as session:
        study = make_study(session, models=("smooth", "jittery"), n_prompts=N_PROMPTS, qc=NO_CHECKS,
                           pairs_per_session=2)
        study.models[0].preset, study.models[1].preset = "demo-smooth", "demo-jittery"
        make_pairs(session, study)
        return study.id


def use_broker(monkeypatch, url: str) -> None:
    monkeypatch.setenv("BLINDPAIR_BROKER_URL", url)
    config.get_settings.cache_clear()


def queued_messages(url: str) -> int:
    """Task messages waiting in the Redis list kombu keeps for the queue."""
    with redis.Redis.from_url(url) as r:
        return r.llen(QUEUE)


def clips(study_id: int) -> list[Clip]:
    # A short session of its own: an open SQLite transaction would hold up the worker and the web app.
    with session_scope() as session:
        rows = session.scalars(select(Clip).where(Clip.study_id == study_id).order_by(Clip.id)).all()
        session.expunge_all()
        return rows


def count(stmt) -> int:
    with session_scope() as session:
        return session.scalar(stmt)


def all_done(study_id: int) -> bool:
    with session_scope() as session:
        return all_served(session, study_id)


def queue(study_id: int, seed: int) -> svc.BatchResult:
    with session_scope() as session:
        return svc.queue_batch(session, study_id=study_id, seeds=[seed])


def hidden(page, name: str) -> str:
    return BeautifulSoup(page.text, "html.parser").find("input", attrs={"name": name})["value"]


def rate_one_pair(study_id: int) -> None:
    """Join through the web pages, get a pair and vote on it, as a participant's browser would."""
    with session_scope() as session:
        invite = session.get(Study, study_id).invite_token
    with TestClient(create_app()) as client:
        page = client.get(f"/join/{invite}")
        assert page.status_code == 200
        # Joining counts against the per-address rate limit, which lives in Redis when the broker is Redis.
        joined = client.post(f"/join/{invite}", data={"csrf_token": hidden(page, "csrf_token"), "consent": "yes"},
                             follow_redirects=False)
        assert joined.status_code == 303 and joined.headers["location"] == "/e/pair", joined.text
        pair = client.get("/e/pair")
        assert pair.status_code == 200 and 'name="assignment"' in pair.text
        soup = BeautifulSoup(pair.text, "html.parser")
        keys = sorted({i["name"] for i in soup.find_all("input") if i.get("name", "").startswith("c_")})
        assert len(keys) == 6  # one answer per default criterion
        answer = {"csrf_token": hidden(pair, "csrf_token"), "assignment": hidden(pair, "assignment"),
                  **dict.fromkeys(keys, "left")}
        voted = client.post("/e/vote", data=answer, follow_redirects=False)
        assert voted.status_code == 303 and voted.headers["location"] == "/e/pair", voted.text
        following = client.get("/e/pair")
        assert following.status_code == 200 and hidden(following, "assignment") != answer["assignment"]


def assert_every_clip_made_once(study_id: int, seed: int) -> list[Clip]:
    """Each model x prompt x seed has exactly one clip, done, with its own file; no stray copies on disk."""
    rows = clips(study_id)
    made = [c for c in rows if c.seed == seed]
    assert len(made) == N_MODELS * N_PROMPTS
    assert len({(c.model_id, c.prompt_id, c.seed) for c in made}) == len(made)
    assert all(c.status == "done" and c.origin == "generated" for c in made), [(c.id, c.error) for c in made]
    assert all(c.attempts == 1 for c in made)  # claimed once: no clip was generated twice
    names = [c.storage_name for c in rows]
    assert len(set(names)) == len(names) and all(media_path(n).is_file() for n in names)
    # Every GIF in the media folder belongs to exactly one clip, as its served file or its uncompressed master (a
    # second generation would leave a file behind).
    masters = [c.master_name for c in rows if c.master_name]
    assert sorted(p.name for p in media_root().iterdir() if not p.name.startswith(".")) == sorted(names + masters)
    # Both seeds' pairs, one per prompt and seed, none twice.
    with session_scope() as session:
        pairs = session.execute(select(Pair.clip_a_id, Pair.clip_b_id).where(Pair.study_id == study_id)).all()
    assert len(pairs) == len(set(pairs)) == N_PROMPTS * 2
    assert {c.id for c in made} <= {cid for p in pairs for cid in p}
    return made


def test_rating_goes_on_while_the_broker_is_down_and_queued_clips_resume(study_id, tmp_path, monkeypatch, caplog):
    port = free_port()
    aof = tmp_path / "redis-data"
    with redis_server(port=port, dir=aof, appendonly=True) as url:
        use_broker(monkeypatch, url)
        batch = queue(study_id, QUEUED_SEED)
        assert batch.created == batch.tasks_sent == N_MODELS * N_PROMPTS
        assert queued_messages(url) == batch.tasks_sent  # no worker is running: the tasks wait in Redis
    # The server process has been terminated: nothing listens on its port any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    # Rating is unaffected.
    votes_before = count(select(func.count(Vote.id)))
    rate_one_pair(study_id)
    assert count(select(func.count(Vote.id))) == votes_before + 1
    # The join went through the Redis rate limiter's fallback, not around it.
    assert "Redis unreachable" in caplog.text

    # Queuing more says the broker is unreachable and records nothing.
    clips_before, batches_before = len(clips(study_id)), count(select(func.count(Batch.id)))
    with pytest.raises(svc.BrokerUnavailable) as refused:
        queue(study_id, OUTAGE_SEED)
    message = str(refused.value)
    assert f"127.0.0.1:{port}" in message and "cannot be reached" in message and "nothing was queued" in message
    result = runner.invoke(cli, ["queue", "--study", str(study_id), "--seeds", str(OUTAGE_SEED)])
    assert result.exit_code == 3, result.output
    assert "Not queued" in result.output and "cannot be reached" in result.output
    assert "Traceback" not in result.output
    assert len(clips(study_id)) == clips_before and count(select(func.count(Batch.id))) == batches_before
    assert not [c for c in clips(study_id) if c.seed == OUTAGE_SEED]
    assert [c.status for c in clips(study_id) if c.seed == QUEUED_SEED] == ["queued"] * batch.created

    # The broker comes back with its data (append-only file, as in the compose file) and a worker starts.
    with redis_server(port=port, dir=aof, appendonly=True) as url:
        assert queued_messages(url) == batch.tasks_sent  # the tasks survived the restart
        worker = Worker(tmp_path, "after-outage", {"BLINDPAIR_BROKER_URL": url}, args=("--no-preload",))
        try:
            wait_for(lambda: all_done(study_id), worker, deadline_s=180)
        finally:
            worker.stop()
    made = assert_every_clip_made_once(study_id, QUEUED_SEED)
    assert {c.id for c in made} == set(batch.clip_ids)


def test_clips_queued_before_the_broker_lost_its_data_run_after_queuing_again(study_id, tmp_path, monkeypatch):
    """A broker without persistence forgets its tasks when it stops; the clip rows do not. Queuing the same
    batch again re-sends exactly the still-queued clips, and a clip whose task arrives twice is made once."""
    port = free_port()
    with redis_server(port=port) as url:
        use_broker(monkeypatch, url)
        batch = queue(study_id, QUEUED_SEED)
        assert batch.created == N_MODELS * N_PROMPTS and queued_messages(url) == batch.created

    with redis_server(port=port) as url:  # back, but empty
        assert queued_messages(url) == 0
        assert [c.status for c in clips(study_id) if c.seed == QUEUED_SEED] == ["queued"] * batch.created
        again = queue(study_id, QUEUED_SEED)
        assert (again.created, again.resent, again.already_done) == (0, batch.created, 0)
        assert sorted(again.clip_ids) == sorted(batch.clip_ids)
        # An impatient admin queues once more: every clip now has two tasks waiting.
        twice = queue(study_id, QUEUED_SEED)
        assert twice.resent == batch.created and queued_messages(url) == 2 * batch.created

        worker = Worker(tmp_path, "after-data-loss", {"BLINDPAIR_BROKER_URL": url}, args=("--no-preload",))
        try:
            # Done, and every second task has been taken and found its clip already done.
            wait_for(lambda: all_done(study_id) and _skipped(worker.log) == batch.created, worker, deadline_s=180)
        finally:
            worker.stop()
        assert queued_messages(url) == 0
    assert len(clips(study_id)) == N_MODELS * N_PROMPTS * 2  # seed 0's and seed 1's, nothing more
    assert_every_clip_made_once(study_id, QUEUED_SEED)


def _skipped(log: Path) -> int:
    """Tasks the worker took for a clip that was already done (worker/tasks.py logs "clip N: done, nothing...")."""
    return log.read_text(errors="replace").count(": done, nothing to do") if log.exists() else 0
