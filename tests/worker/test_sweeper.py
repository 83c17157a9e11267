"""The worker's sweeper: clips of dead workers go back in the queue, and clips whose message was lost are sent
again once the queue is empty, on the embedded broker and on Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.models import Clip
from app.services import generation as svc
from tests.conftest import BACKENDS
from tests.worker.conftest import make_tiny_study
from worker import celery_app


def queue_without_messages(session, study) -> list[int]:
    """Clips recorded as queued whose messages never reach the broker: as when a worker is killed between
    taking a message and claiming its clip, or when the send fails after the commit."""
    lost: list[int] = []
    svc.queue_batch(session, study_id=study.id, send=lost.extend)
    return lost


def age(session, clip_ids, seconds: float) -> None:
    session.execute(update(Clip).where(Clip.id.in_(clip_ids)).values(queued_at=svc.utcnow() - timedelta(
        seconds=seconds)))
    session.commit()


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_only_clips_queued_longer_than_the_wait_are_resent_and_their_wait_restarts(session, tiny_model_dir):
    study = make_tiny_study(session, tiny_model_dir, n_prompts=3)
    ids = queue_without_messages(session, study)
    old, recent = ids[:4], ids[4:]
    age(session, old, 700)
    running, done = old[0], old[1]
    session.execute(update(Clip).where(Clip.id == running).values(status="running", claimed_by="w:1",
                                                                   heartbeat_at=svc.utcnow()))
    session.execute(update(Clip).where(Clip.id == done).values(status="done"))
    legacy = recent[0]  # a clip queued before the column existed: its created_at counts
    session.execute(update(Clip).where(Clip.id == legacy).values(queued_at=None,
                                                                  created_at=svc.utcnow() - timedelta(hours=1)))
    session.commit()

    assert svc.resend_orphans(session, queued_for_seconds=600) == sorted([*old[2:], legacy])
    session.commit()
    assert svc.resend_orphans(session, queued_for_seconds=600) == []  # each waits its time again
    queued_at = dict(session.execute(select(Clip.id, Clip.queued_at).where(Clip.id.in_(old[2:]))).all())
    assert all(svc.utcnow() - t < timedelta(seconds=60) for t in map(_aware, queued_at.values()))


def _aware(t):
    from datetime import UTC

    return t if t.tzinfo else t.replace(tzinfo=UTC)


def test_a_lost_message_is_sent_again_once_the_queue_is_empty(session, tiny_model_dir, broker_env, monkeypatch):
    monkeypatch.setenv("BLINDPAIR_WORKER_ORPHAN_SECONDS", "60")
    study = make_tiny_study(session, tiny_model_dir, n_prompts=2)
    lost = queue_without_messages(session, study)
    assert celery_app.queued_messages() == 0
    assert celery_app.sweep_once() == []  # too recent: they may be between their commit and their send
    age(session, lost, 120)
    assert celery_app.sweep_once() == lost
    assert celery_app.queued_messages() == len(lost)

    # While messages wait in the queue nothing is sent again, however long the clips have waited.
    more = queue_without_messages(session, make_tiny_study(session, tiny_model_dir, n_prompts=1))
    age(session, lost + more, 120)
    assert celery_app.sweep_once() == []
    assert celery_app.queued_messages() == len(lost)


def test_the_sweeper_removes_old_stored_files_no_clip_names_and_keeps_the_rest(session, monkeypatch):
    """Orphans (a worker killed between upload and record, an interrupted write's temp file) go once they are
    older than BLINDPAIR_STORAGE_ORPHAN_SECONDS; a clip's file never does, however old."""
    import os
    import time

    from app.media.storage import media_root, store_bytes
    from tests.factories import NO_CHECKS, make_pairs, make_study

    monkeypatch.setenv("BLINDPAIR_STORAGE_ORPHAN_SECONDS", "3600")
    from app import config

    config.get_settings.cache_clear()
    make_pairs(session, make_study(session, qc=NO_CHECKS))
    session.commit()
    named = {p.name for p in media_root().iterdir()}
    orphan, young = store_bytes(b"GIF89a orphan").storage_name, store_bytes(b"GIF89a young").storage_name
    (media_root() / ".tmp-interrupted").write_bytes(b"GIF89a half")
    (media_root() / "notes.txt").write_text("not ours: an operator's file in the media folder")
    two_hours_ago = time.time() - 7200
    for name in [*named, orphan, ".tmp-interrupted", "notes.txt"]:
        os.utime(media_root() / name, (two_hours_ago, two_hours_ago))
    assert sorted(celery_app.sweep_storage(force=True)) == sorted([orphan, ".tmp-interrupted"])
    assert {p.name for p in media_root().iterdir()} == named | {young, "notes.txt"}
