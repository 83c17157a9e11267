"""The Celery application: broker from settings, reliability options, and how tasks are sent.

Broker: ``BLINDPAIR_BROKER_URL`` (e.g. ``redis://redis:6379/0``); by default kombu's SQLAlchemy transport on a
SQLite file next to the database, which needs no server. Results are ignored: the clip rows are the truth.
Start a worker with ``blindpair worker`` (or ``celery -A worker.celery_app worker``).
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from celery import Celery, signals

from app.config import get_settings
from worker.config import worker_settings

log = logging.getLogger(__name__)
TASK_NAME = "blindpair.generate_clip"
METRICS_TASK_NAME = "blindpair.compute_metrics"  # automatic clip metrics (worker/metrics.py)
METRICS_CLIPS_PER_TASK = 8
QUEUE = "generation"
# Set to "0" by `blindpair worker --no-preload`. A plain environment flag, not a Settings field: it only
# passes one CLI choice from the command to the worker_init signal of the same process.
PRELOAD_ENV = "BLINDPAIR_WORKER_PRELOAD"


def make_celery(broker_url: str | None = None) -> Celery:
    ws = worker_settings()
    url = broker_url or get_settings().resolved_broker_url
    _prepare_sqlite_broker(url)
    _sqlite_broker_wal(url)
    celery = Celery("blindpair", broker=url, include=["worker.tasks"])
    celery.conf.update(
        # Reliability (https://docs.celeryq.dev/en/stable/userguide/tasks.html#Task.acks_late): a message is
        # acknowledged only after the clip is finished, and put back if the worker process is lost.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a GPU worker holds one clip at a time; the rest stay for other workers
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(url, ws),
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_send_task_events=False,
    )
    return celery


SQLITE_BROKER = "sqla+sqlite:///"


def _prepare_sqlite_broker(url: str) -> None:
    """The embedded broker's SQLite file lives in the data folder, which may not exist yet."""
    if url.startswith(SQLITE_BROKER) and url != SQLITE_BROKER:
        Path(url[len(SQLITE_BROKER):]).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_broker_wal(url: str) -> None:
    """Put the embedded broker's file in WAL mode (persistent: once per file, kept by every later connection).

    kombu's SQLAlchemy transport commits once per message sent and once per message a worker takes. In SQLite's
    default rollback-journal mode a commit costs several fsyncs (about 16 ms on the benchmark machine, the
    largest part of a real worker's time between two tiny CPU clips); in WAL mode it costs one, and it stays as
    durable, since synchronous stays FULL (https://sqlite.org/wal.html). The app database already runs in WAL.
    """
    if not url.startswith(SQLITE_BROKER) or url == SQLITE_BROKER:
        return
    try:
        with closing(sqlite3.connect(url[len(SQLITE_BROKER):], timeout=10)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except (sqlite3.Error, OSError) as exc:  # an unusable file is reported by broker_problem, in words
        log.warning("could not switch the SQLite broker to WAL mode (%s); it works, only slower", exc)


def _transport_options(url: str, ws) -> dict:
    if url.startswith(("redis://", "rediss://")):
        # A message not acknowledged within this many seconds is delivered again (a worker died holding it).
        return {"visibility_timeout": ws.visibility_timeout}
    # kombu's SQLAlchemy transport hands its transport options to create_engine(), which refuses unknown ones,
    # and has no visibility timeout at all: a dead worker's clip is found by its stale lease (sweep_once).
    return {}


app = make_celery()
_senders: dict[str, Celery] = {}


def sender_app() -> Celery:
    """An app for the current settings' broker (tests and the CLI change settings after import)."""
    url = get_settings().resolved_broker_url
    if url == app.conf.broker_url:
        return app
    if url not in _senders:
        _senders[url] = make_celery(url)
    return _senders[url]


def _redact(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)


def broker_problem(timeout: float = 3.0) -> str | None:
    """None if the broker answers, else a sentence saying what to do."""
    celery = sender_app()
    url = celery.conf.broker_url
    try:
        _prepare_sqlite_broker(url)
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        return (f"the task queue at {_redact(url)} cannot be reached ({type(exc).__name__}: {exc}). "
                f"Start it (e.g. `redis-server`, or `docker compose up -d redis`) or unset BLINDPAIR_BROKER_URL "
                f"to use the built-in SQLite queue; nothing was queued.")
    return None


def send_generate(clip_ids: list[int]) -> None:
    celery = sender_app()
    with celery.connection_for_write() as conn:
        for clip_id in clip_ids:
            celery.send_task(TASK_NAME, args=[clip_id], queue=QUEUE, connection=conn)


def send_metrics(clip_ids: list[int], *, force: bool = False) -> None:
    """Tasks for the clips' automatic metrics, behind the generation tasks already queued: a few clips per task,
    so several workers share a study's clips and a worker lost mid-task redoes only a few."""
    celery = sender_app()
    with celery.connection_for_write() as conn:
        for start in range(0, len(clip_ids), METRICS_CLIPS_PER_TASK):
            celery.send_task(METRICS_TASK_NAME, args=[list(clip_ids[start:start + METRICS_CLIPS_PER_TASK])],
                             kwargs={"force": force}, queue=QUEUE, connection=conn)


class CeleryTaskQueue:
    """The services' generation queue (app.services.task_queue) on this module's Celery app."""

    def send_generate(self, clip_ids: list[int]) -> None:
        send_generate(clip_ids)

    def send_metrics(self, clip_ids: list[int], *, force: bool = False) -> None:
        send_metrics(clip_ids, force=force)

    def problem(self) -> str | None:
        return broker_problem()


task_queue = CeleryTaskQueue()


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_sweeper_started = threading.Event()


def queued_messages() -> int:
    """Messages waiting in the generation queue (taken-but-unacknowledged ones are not counted)."""
    from kombu.exceptions import ChannelError

    celery = sender_app()
    with celery.connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(queue=QUEUE, passive=True).message_count
        except ChannelError:
            return 0  # Redis deletes an empty list, so a drained queue does not exist


def sweep_once() -> list[int]:
    """Requeue clips of dead workers and send their tasks again; then, if the queue is empty, send again the
    clips still queued after ``worker_orphan_seconds``: their message was lost (``resend_orphans``)."""
    from app.db import session_scope
    from app.services.generation import recover_stale, resend_orphans

    ws = worker_settings()
    with session_scope() as session:
        ids = recover_stale(session, lease_seconds=ws.lease_seconds, max_attempts=ws.max_attempts)
    if ids:
        log.warning("requeued %d clip(s) whose worker stopped responding: %s", len(ids), ids)
        send_generate(ids)
    if queued_messages() == 0:
        with session_scope() as session:
            orphans = resend_orphans(session, queued_for_seconds=ws.orphan_seconds)
        if orphans:
            log.warning("the queue is empty but %d clip(s) have waited over %.0f s: their messages were lost "
                        "(a worker killed as it took them, or a failed send); sending them again: %s",
                        len(orphans), ws.orphan_seconds, orphans)
            send_generate(orphans)
            ids = ids + orphans
    from worker.pair_encoding import encode_waiting

    served = encode_waiting()  # groups whose last worker died after recording its clip, before serving them
    if served:
        log.warning("served %d clip(s) a worker left waiting for their pair's encoding: %s", len(served), served)
    sweep_storage()
    return ids


_last_storage_sweep = 0.0


def sweep_storage(force: bool = False) -> list[str]:
    """Remove stored objects no clip names, older than ``storage_orphan_seconds``, from the configured store.
    Listing a bucket costs a request per thousand objects, so at most once per tenth of that age per process."""
    global _last_storage_sweep
    from app.db import session_scope
    from app.media.storage import StorageError
    from app.services.storage import sweep_orphans

    age = get_settings().storage_orphan_seconds
    if not force and time.monotonic() - _last_storage_sweep < age / 10:
        return []
    _last_storage_sweep = time.monotonic()
    try:
        with session_scope() as session:
            return sweep_orphans(session, older_than_seconds=age)
    except StorageError as exc:
        log.warning("sweeping orphaned clip objects skipped: %s", exc)
        return []


def _sweep_forever(stop: threading.Event) -> None:
    interval = worker_settings().sweep_seconds
    while not stop.wait(interval):
        try:
            sweep_once()
        except Exception:  # the sweeper must outlive a database hiccup; the next round tries again
            log.exception("sweeping for stale clips failed; trying again in %.0f s", interval)


@signals.worker_init.connect
def _preload(**_kw) -> None:
    """Import torch and diffusers before saying ready, so the first clip's time is the clip's (tens of seconds
    on a small CPU otherwise). Weights are still loaded on first use, once per process. The demo's worker skips
    this (``--no-preload``): its presets never touch diffusers, and the import is most of its start-up time."""
    if os.environ.get(PRELOAD_ENV, "1") == "0":
        return
    from worker.pipelines import quiet_libraries

    quiet_libraries()
    import diffusers  # noqa: F401
    from diffusers import AnimateDiffPipeline, MotionAdapter  # noqa: F401


def pending_clips() -> int:
    from sqlalchemy import func, select

    from app.db import session_scope
    from app.models import Clip

    with session_scope() as session:
        return session.scalar(select(func.count(Clip.id)).where(Clip.status.in_(("queued", "running")))) or 0


def _exit_when_idle(every: float = 2.0) -> None:
    """``blindpair worker --exit-when-idle``: stop (warm shutdown) once no clip is queued or running."""
    idle_checks = 0
    while True:
        time.sleep(every)
        try:
            idle_checks = idle_checks + 1 if pending_clips() == 0 else 0
        except Exception:
            log.exception("checking for pending clips failed")
            continue
        if idle_checks >= 2:  # twice in a row: a clip between being queued and being sent is not missed
            log.info("no clip is queued or running: stopping (--exit-when-idle)")
            os.kill(os.getpid(), signal.SIGTERM)
            return


_device_reported = threading.Event()


def report_device(device: str | None = None) -> None:
    """Record this worker's device and GPU memory (table worker_devices), so the study page can warn before
    generation when a model fits none of the connected GPUs. A failure is logged, never fatal."""
    try:
        from app.db import session_scope
        from app.services.workers import record_worker_device

        device = device or worker_settings().device
        if not device:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        total = None
        label = f"cpu ({platform.machine()})"
        if device.startswith("cuda"):  # torch only where there is a GPU: a CPU demo worker never imports it
            import torch

            props = torch.cuda.get_device_properties(torch.device(device))
            total, label = int(props.total_memory), f"{device} ({props.name})"
        with session_scope() as session:
            record_worker_device(session, worker=worker_identity(), device=label, total_memory_bytes=total)
    except Exception:
        log.warning("could not record this worker's device for the study page's memory check", exc_info=True)
    finally:
        _device_reported.set()  # once per process: a failure is logged once, not with every clip


@signals.worker_ready.connect
def _start_sweeper(sender=None, **_kw) -> None:
    """Every worker also watches for clips whose worker died (any one of them may take them back)."""
    if _sweeper_started.is_set():
        return
    _sweeper_started.set()
    threading.Thread(target=report_device, name="blindpair-device-report", daemon=True).start()
    threading.Thread(target=_sweep_forever, args=(threading.Event(),), name="blindpair-sweeper",
                     daemon=True).start()
    if worker_settings().exit_when_idle:
        threading.Thread(target=_exit_when_idle, name="blindpair-idle", daemon=True).start()
