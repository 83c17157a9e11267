"""The Celery task: claim a clip, generate it, store the GIF, record the cost, make pairs."""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError

from app.config import get_settings
from app.db import session_scope
from app.media.storage import (
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    StoredFile,
    delete_media,
    store_bytes,
)
from app.services import generation as svc
from worker.celery_app import METRICS_TASK_NAME, TASK_NAME, _device_reported, app, report_device, worker_identity
from worker.config import worker_settings
from worker.generate import GpuOutOfMemory, generate_clip
from worker.pair_encoding import encode_group
from worker.pipelines import PipelineUnavailable, TransientLoadError, WeightsMissing
from worker.presets import GenerationConfigError, resolve_run

log = logging.getLogger(__name__)
# Worth another try after a pause: the hub or the database was briefly unreachable.
TRANSIENT = (TransientLoadError, OperationalError, ConnectionError, TimeoutError)


def worker_device(ws=None) -> str:
    device = (ws or worker_settings()).device
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def heartbeating(clip_id: int, worker: str, every: float):
    """Keep this worker's lease on the clip fresh while it generates (a dead worker's lease runs out)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                with session_scope() as session:
                    if not svc.heartbeat(session, clip_id=clip_id, worker=worker):
                        return
            except Exception:
                log.exception("heartbeat for clip %s failed; will try again", clip_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{clip_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def upload_clip(data: bytes, *, suffix: str = ".gif", wait_seconds: float | None = None,
                sleep=time.sleep) -> StoredFile:
    """Store a finished clip, retrying with jittered exponential backoff (0.5 s doubling to 15 s) while the store
    does not answer or refuses us, for up to ``storage_upload_wait_seconds``; then the last error is raised.

    The clip's bytes are kept in memory meanwhile, so a short outage costs no second generation. Wrong
    credentials or a missing bucket are retried too: an operator fixing them should not cost the queued work,
    and the log says, once per try, what to fix.
    """
    settings = get_settings()
    deadline = time.monotonic() + (settings.storage_upload_wait_seconds if wait_seconds is None else wait_seconds)
    delay = 0.5
    while True:
        try:
            return store_bytes(data, suffix=suffix)
        except (StorageUnavailable, StorageConfigError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("storing a clip failed (%s); trying again in %.1f s", exc, delay)
            sleep(delay * random.uniform(0.75, 1.25))
            delay = min(delay * 2, 15.0)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_clip(clip_id: int, *, retries: int = 0, max_retries: int | None = None, ws=None) -> str:
    """Generate one clip if it still needs it. Returns the outcome in a word (for logs and tests).

    Raises ``RetryLater`` for a transient error while retries remain (the Celery task turns it into a retry).
    ``ws``: the task's ``worker_settings()``, read once per clip (each read parses the environment and .env).
    """
    ws = ws or worker_settings()
    max_retries = ws.max_retries if max_retries is None else max_retries
    worker = worker_identity()
    if not _device_reported.is_set():  # a worker not started by Celery (tests, the demo) reports with its first clip
        report_device(worker_device(ws))
    with session_scope() as session:
        claim = svc.claim_clip(session, clip_id=clip_id, worker=worker, lease_seconds=ws.lease_seconds)
        clip = claim.clip
        if claim.outcome != "claimed" or clip is None:  # a claimed Claim always carries its clip
            log.info("clip %s: %s, nothing to do", clip_id, claim.outcome)
            return claim.outcome
        try:
            spec = resolve_run(model_name=clip.model.name, preset=clip.model.preset, overrides=clip.model.overrides,
                               settings=clip.model.study.settings)
        except GenerationConfigError as exc:
            svc.fail_clip(session, clip_id=clip_id, worker=worker, error=f"bad generation settings: {exc}")
            return "failed"
        prompt, seed = clip.prompt.text, clip.seed

    try:
        with heartbeating(clip_id, worker, ws.heartbeat_seconds):
            result = generate_clip(spec, prompt=prompt, seed=seed, device=worker_device(ws))
            # Upload first, record after (complete_clip below): a clip row never names an object that is not
            # whole in the store, and an upload cut off midway leaves at most an orphan for the sweeper.
            if spec.clip_format == "gif":
                # The uncompressed master: the served copy is made from it at the pair's level (pair_encoding).
                master, stored = upload_clip(result.gif, suffix=".gif"), None
            else:
                # MP4/WebM: written once at the study's fixed quality for every model (app/media/video.py), served
                # as it is; the media route equalises the sizes of a prompt's clips when it serves them.
                master, stored = None, upload_clip(result.gif, suffix="." + spec.clip_format)
    except (StorageUnavailable, StorageConfigError) as exc:
        # The store stayed down (or refused us) for the whole upload wait: the clip goes back to the queue, its
        # retry budget untouched (an outage is not the clip's fault), and is made again once the store answers.
        with session_scope() as session:
            svc.release_for_retry(session, clip_id=clip_id, worker=worker,
                                  error=f"waiting for the clip store: {_describe(exc)}")
        raise StoreWait(exc) from exc
    except TRANSIENT as exc:
        if retries < max_retries:
            with session_scope() as session:
                svc.release_for_retry(session, clip_id=clip_id, worker=worker,
                                      error=f"retry {retries + 1} of {max_retries} after: {_describe(exc)}")
            raise RetryLater(exc) from exc
        return _fail(clip_id, worker, f"gave up after {max_retries} retries: {_describe(exc)}")
    except (WeightsMissing, PipelineUnavailable, GpuOutOfMemory) as exc:
        return _fail(clip_id, worker, str(exc))
    except Exception as exc:  # a failed clip must say why in words, whatever went wrong
        log.exception("clip %s failed", clip_id)
        return _fail(clip_id, worker, f"generation failed: {_describe(exc)}")

    with session_scope() as session:
        recorded = svc.complete_clip(session, clip_id=clip_id, worker=worker, result=result, stored=stored,
                                     master=master)
    if not recorded:
        # Our lease ran out and another worker took the clip: drop our copy, theirs is the clip.
        ours = master if master is not None else stored
        assert ours is not None  # one of the two was uploaded above
        try:
            delete_media(ours.storage_name, ours.store)
        except (OSError, ValueError, StorageError):
            log.warning("clip %s: the discarded copy stays in the store for the orphan sweep", clip_id)
        log.warning("clip %s was taken over by another worker; discarded this copy", clip_id)
        return "superseded"
    try:
        # The last clip of its prompt and seed serves the whole group at one lossy level, then pairs it.
        served = encode_group(clip_id) if master is not None else [clip_id]
    except Exception:
        # The clip is recorded and its master kept: the sweeper serves the group later (encode_waiting).
        log.exception("serving the group of clip %s failed; the sweeper will try again", clip_id)
        served = []
    for done_id in served:
        measure_clip(done_id, device=worker_device(ws), with_clip=spec.preset.kind in ("animatediff", "diffusers"))
    return "done"


def measure_clip(clip_id: int, *, device: str, with_clip: bool) -> None:
    """The new clip's automatic metrics (worker/metrics.py), after it is recorded: CPU work that overlaps the next
    clip's denoising with ``--concurrency 2``. A failure is logged, never the clip's: the metrics can be computed
    again (``blindpair metrics compute``, the study page). CLIP only where the worker runs real pipelines: a
    demo worker would otherwise fetch CLIP's weights."""
    from worker.metrics import compute_for_clips

    try:
        summary = compute_for_clips([clip_id], device=device, with_clip=with_clip)
    except Exception:
        log.exception("metrics of clip %s failed; compute them again with `blindpair metrics compute`", clip_id)
        return
    for clip, error in summary.failed.items():
        log.warning("metrics of clip %s failed: %s", clip, error)


@app.task(bind=True, name=METRICS_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def compute_metrics_task(self, clip_ids: list[int], force: bool = False) -> str:
    """Metrics of clips already made (the study page's button): weight-free, and CLIP where its weights are."""
    from worker.metrics import compute_for_clips

    summary = compute_for_clips(list(clip_ids), device=worker_device(), force=force)
    for clip, error in summary.failed.items():
        log.warning("metrics of clip %s failed: %s", clip, error)
    return f"{summary.measured} measured, {summary.skipped_current} already current, {len(summary.failed)} failed"


def _fail(clip_id: int, worker: str, error: str) -> str:
    log.error("clip %s failed: %s", clip_id, error)
    with session_scope() as session:
        svc.fail_clip(session, clip_id=clip_id, worker=worker, error=error)
    return "failed"


class RetryLater(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(_describe(cause))
        self.cause = cause


class StoreWait(RetryLater):
    """The clip store did not take the clip: retried for as long as it takes, never failed for it."""


STORE_WAIT_MAX_COUNTDOWN = 300.0


@app.task(bind=True, name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def generate_clip_task(self, clip_id: int) -> str:
    ws = worker_settings()
    try:
        return run_clip(clip_id, retries=self.request.retries, max_retries=ws.max_retries, ws=ws)
    except StoreWait as exc:
        # No limit on these: the clip is queued in the database and its message comes back after the countdown.
        # (Each one still counts in request.retries, so a later transient error has fewer tries left.)
        countdown = min(ws.retry_backoff_seconds * (2 ** min(self.request.retries, 10)),
                        STORE_WAIT_MAX_COUNTDOWN) * random.uniform(0.5, 1.5)
        raise self.retry(exc=exc, countdown=countdown, max_retries=sys.maxsize) from exc
    except RetryLater as exc:
        # Exponential backoff with jitter, as Celery's retry_backoff does.
        countdown = ws.retry_backoff_seconds * (2 ** self.request.retries) * random.uniform(0.5, 1.5)
        raise self.retry(exc=exc, countdown=countdown, max_retries=ws.max_retries) from exc
