"""Serve a complete group's clips at one lossy level: read the plan, encode from the masters, record.

The rule and its reasons are in app/services/pair_encoding.py. The slow part (gifsicle on every master, the
PSNR, storing the files: about a second per 512x512 clip on 16 cores) runs outside any write transaction; the
record is one short transaction of conditional updates. Safe to run twice or from two workers at once: the
copies are deterministic, the second writer's update matches nothing and its files are removed. Nothing is
served half-done: a clip's ``storage_name`` is set only with its final file, in the transaction that pairs it.
"""

from __future__ import annotations

import logging
import time

from app.db import session_scope
from app.media.compression import psnr_db
from app.media.storage import StorageError, delete_media, read_bytes, store_bytes
from app.services import pair_encoding as svc
from worker.gif import served_copy

log = logging.getLogger(__name__)


def encode_group(clip_id: int) -> list[int]:
    """Serve the group of ``clip_id`` if every model's clip of its prompt and seed is done; returns the clips
    whose served file was written (empty while the group is incomplete or already served at its level)."""
    with session_scope() as session:
        plan = svc.plan_group(session, clip_id=clip_id)
    if plan is None:
        return []
    written: list[tuple[str, str]] = []
    encoded: list[svc.Encoded] = []
    try:
        for member in plan.to_encode:
            t0 = time.perf_counter()
            # The master's store holds the served copy too (a clip lives in one store: app/media/storage.py).
            master = read_bytes(member.master_name, member.store)
            data = served_copy(master, plan.level)
            quality = psnr_db(master, data)
            stored = store_bytes(data, suffix=".gif", store=member.store)
            written.append((stored.storage_name, stored.store))
            encoded.append(svc.Encoded(member.clip_id, member.master_name, stored.storage_name, stored.sha256,
                                       stored.size_bytes, quality, time.perf_counter() - t0, stored.store))
        with session_scope() as session:
            recorded = svc.record_group(session, plan=plan, encoded=encoded)
    except BaseException:
        _remove(written)  # nothing recorded: the clips stay unserved, and the sweeper tries again
        raise
    _remove(recorded.unused_files)
    if recorded.updated:
        log.info("prompt %s seed %s: %d clip(s) served at lossy level %s", plan.prompt_id, plan.seed,
                 len(recorded.updated), plan.level)
    return recorded.updated


def encode_waiting(limit: int = 100) -> list[int]:
    """The sweeper's pass: serve every complete group a worker left unserved (it died after recording a clip)."""
    with session_scope() as session:
        waiting = svc.waiting_clips(session, limit=limit)
    done: list[int] = []
    for clip_id in waiting:
        if clip_id in done:
            continue
        try:
            done += encode_group(clip_id)
        except Exception:
            log.exception("serving the group of clip %s failed; the sweeper tries again", clip_id)
    return done


def _remove(files: list[tuple[str, str]]) -> None:
    for name, store in files:
        try:
            delete_media(name, store)
        except (OSError, ValueError, StorageError):
            log.warning("could not remove the unused media file %s (%s); the orphan sweep will", name, store)
