"""Generation batches: queue clips, follow their progress, retry failures, and summarise what they cost.

The app database, not Celery's result backend, is the truth about a clip: ``queued`` -> ``running`` (claimed
by one worker, which keeps a heartbeat) -> ``done`` | ``failed``. Workers call the ``claim_clip`` /
``complete_clip`` / ``fail_clip`` / ``recover_stale`` functions below; every state change is one conditional
UPDATE so that two workers can never both finish the same clip.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, Executable, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from app.models import Batch, Clip, Prompt, Study, StudyModel
from app.services import task_queue
from app.services.workers import connected_gpus
from worker.presets import (
    MAX_SEEDS,
    OFF_CARD_FLAG,
    GenerationConfigError,
    RunSpec,
    fit_warnings,
    get_preset,
    mixed_family_note,
    off_card,
    resolve_run,
    validate_settings,
)

STATES = ("queued", "running", "done", "failed")
Sender = Callable[[list[int]], None]


class GenerationError(ValueError):
    """Bad request for a batch; ``errors`` lists every problem in words. Nothing was changed."""

    def __init__(self, errors: list[str] | str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("; ".join(self.errors))


class BrokerUnavailable(GenerationError):
    """The task queue could not be reached."""


@dataclass
class BatchResult:
    batch_id: int | None
    created: int = 0  # new clip rows
    resent: int = 0  # clips already queued whose task was sent again (a lost message is harmless this way)
    already_done: int = 0
    running: int = 0
    failed: int = 0  # failed clips are left alone: retry them with retry_failed
    clip_ids: list[int] = field(default_factory=list)  # the clips whose task was sent
    scope_clip_ids: list[int] = field(default_factory=list)  # every clip of the batch, whatever its state

    @property
    def tasks_sent(self) -> int:
        return len(self.clip_ids)

    def describe(self) -> str:
        parts = [f"{self.created} new clip(s) queued"]
        if self.resent:
            parts.append(f"{self.resent} still-queued clip(s) sent again")
        if self.already_done:
            parts.append(f"{self.already_done} already done")
        if self.running:
            parts.append(f"{self.running} running")
        if self.failed:
            parts.append(f"{self.failed} failed (use retry to run them again)")
        return ", ".join(parts) + "."


def _write(session: Session, stmt: Executable) -> int:
    """Run a conditional UPDATE and return how many rows it changed.

    synchronize_session=False: the WHERE clauses compare timestamps, which SQLite returns naive, so the ORM
    cannot evaluate them in Python; callers re-read what they need.
    """
    result = session.execute(stmt, execution_options={"synchronize_session": False})
    if not isinstance(result, CursorResult):  # DML always gives one; anything else is a programming error
        raise TypeError(f"_write runs UPDATE/INSERT statements, not {type(stmt).__name__}")
    return result.rowcount


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive datetimes
        return value.replace(tzinfo=UTC)
    return value


def _study(session: Session, study_id: int) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise GenerationError(f"there is no study with id {study_id}")
    return study


def negative_prompt_problems(settings: dict[str, Any] | None) -> list[str]:
    """The study's negative prompt checked like a prompt: SD-1.5's text encoder keeps 77 CLIP tokens and cuts
    the rest silently. (Models without CFG, guidance 1.0, ignore it: each clip records whether it was used.)"""
    from app.services.prompts import character_problem, token_problem

    text = (settings or {}).get("negative_prompt")
    if not isinstance(text, str) or not text:
        return []
    problem = character_problem(text) or token_problem(text)
    return [f"negative_prompt {problem}"] if problem else []


def run_specs(study: Study) -> dict[int, RunSpec]:
    """Exactly what each model of the study runs with; GenerationError lists every bad preset/override/setting."""
    errors: list[str] = negative_prompt_problems(study.settings)
    specs: dict[int, RunSpec] = {}
    for model in study.models:
        try:
            specs[model.id] = resolve_run(model_name=model.name, preset=model.preset, overrides=model.overrides,
                                          settings=study.settings)
        except GenerationConfigError as exc:
            errors += [e for e in exc.errors if e not in errors]
    if errors:
        raise GenerationError(errors)
    return specs


def off_card_models(study: Study) -> list[dict[str, Any]]:
    """The study's models marked as off-card variants, each with the settings that leave its preset's card
    (for the study page and the report: a reader must see that a model did not run as published)."""
    out: list[dict[str, Any]] = []
    for model in study.models:
        overrides = model.overrides or {}
        if not model.preset or not overrides.get(OFF_CARD_FLAG):
            continue
        try:
            leaves = off_card(get_preset(model.preset), overrides)
        except GenerationConfigError:
            continue  # an unknown preset is reported by run_specs
        if leaves:
            out.append({"model": model.name, "preset": model.preset, "leaves": list(leaves)})
    return out


def validate_models(*, settings: dict[str, Any] | None, models: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
    """For study creation: raise GenerationError if any (name, preset, overrides) or the settings are bad.

    An empty preset is allowed here (a model whose clips are imported); queueing it is refused later.
    """
    errors: list[str] = []
    models = list(models)
    try:
        validate_settings(settings, presets=[preset for _, preset, _ in models if preset])
    except GenerationConfigError as exc:
        errors += exc.errors
    errors += negative_prompt_problems(settings)
    for name, preset, overrides in models:
        if not preset:
            continue
        try:
            resolve_run(model_name=name, preset=preset, overrides=overrides, settings=None)
        except GenerationConfigError as exc:
            errors += exc.errors
    if errors:
        raise GenerationError(errors)


# What one batch may queue. Every list a request brings is bounded: 100,000 seeds were once accepted, and a
# batch is prompts x models x seeds clips, each a row now and minutes of GPU later.
MAX_SEEDS_PER_BATCH = MAX_SEEDS
MAX_CLIPS_PER_BATCH = 100_000


def _parse_seeds(seeds: Iterable[int] | None, default: list[int]) -> list[int]:
    out = list(default) if seeds is None else list(seeds)
    if len(out) > MAX_SEEDS_PER_BATCH:
        where = "the study's settings list" if seeds is None else "the batch asks for"
        raise GenerationError(f"a batch takes at most {MAX_SEEDS_PER_BATCH} seeds, but {where} {len(out)}; queue "
                              "them in several batches")
    if not out or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63 for s in out):
        shown = repr(out) if len(repr(out)) <= 80 else repr(out)[:77] + "..."
        raise GenerationError(f"seeds must be whole numbers >= 0 (and below 2**63), not {shown}")
    return sorted(set(out))


def _check_batch_size(n_prompts: int, n_models: int, n_seeds: int) -> None:
    clips = n_prompts * n_models * n_seeds
    if clips > MAX_CLIPS_PER_BATCH:
        raise GenerationError(f"the batch would be {clips:,} clips ({n_prompts} prompts x {n_models} models x "
                              f"{n_seeds} seeds), over the limit of {MAX_CLIPS_PER_BATCH:,} per batch; queue it "
                              "by theme or in parts")


def _select_prompts(session: Session, study: Study, theme: str | None,
                    prompt_ids: Iterable[int | str] | None) -> list[Prompt]:
    query = select(Prompt).where(Prompt.study_id == study.id).order_by(Prompt.id)
    prompts = list(session.scalars(query))
    if theme:
        themes = sorted({p.theme for p in prompts})
        prompts = [p for p in prompts if p.theme == theme]
        if not prompts:
            raise GenerationError(f"the study has no prompts with theme {theme!r}; its themes: {', '.join(themes)}")
    if prompt_ids is not None:
        wanted = list(prompt_ids)
        by_key = {p.id: p for p in prompts} | {p.external_id: p for p in prompts}
        unknown = [w for w in wanted if w not in by_key and str(w) not in by_key
                   and not (isinstance(w, str) and w.isdecimal() and int(w) in by_key)]
        if unknown:
            raise GenerationError(f"unknown prompt id(s) for this study{' and theme' if theme else ''}: "
                                  f"{', '.join(map(str, unknown))}")
        chosen = {}
        for w in wanted:
            p = by_key.get(w) or by_key.get(str(w)) or by_key[int(w)]
            chosen[p.id] = p
        prompts = sorted(chosen.values(), key=lambda p: p.id)
    if not prompts:
        raise GenerationError("the study has no prompts to generate; add prompts first")
    return prompts


def default_sender() -> Sender:
    return task_queue.current().send_generate


def check_broker() -> None:
    problem = task_queue.current().problem()
    if problem:
        raise BrokerUnavailable(problem)


def queue_batch(session: Session, *, study_id: int, theme: str | None = None,
                prompt_ids: Iterable[int | str] | None = None, seeds: Iterable[int] | None = None,
                send: Sender | None = None) -> BatchResult:
    """Create the missing clips of prompts x models x seeds and send their tasks.

    Idempotent: a clip that exists is not created again (unique model/prompt/seed/variant); still-queued clips
    get their task sent again (a worker skips a clip that is done or being generated), done/running/failed
    ones are left alone. Bad input raises GenerationError and an unreachable broker BrokerUnavailable, both
    before anything is written. This function COMMITS before sending: a worker must be able to read the clip
    rows when the task arrives.
    """
    study = _study(session, study_id)
    specs = run_specs(study)
    if not study.models:
        raise GenerationError("the study has no models to generate")
    settings = validate_settings(study.settings, presets=[m.preset for m in study.models if m.preset])
    seed_list = _parse_seeds(seeds, settings["seeds"])
    prompts = _select_prompts(session, study, theme, prompt_ids)
    _check_batch_size(len(prompts), len(study.models), len(seed_list))
    if send is None:
        check_broker()
        send = default_sender()

    batch = Batch(study_id=study.id, spec={"theme": theme, "prompt_ids": [p.external_id for p in prompts]
                                           if prompt_ids is not None else None, "seeds": seed_list})
    session.add(batch)
    session.flush()
    existing = {
        (c.model_id, c.prompt_id, c.seed): c
        for c in session.scalars(select(Clip).where(Clip.study_id == study.id, Clip.variant == "",
                                                    Clip.prompt_id.in_([p.id for p in prompts])))
    }
    try:
        result, to_send = _create_clips(session, study, batch, prompts, seed_list, specs, existing)
    except IntegrityError as exc:
        # Another queue request created some of these clips between our read and our insert.
        session.rollback()
        raise GenerationError("another batch for these clips was queued at the same moment; nothing was "
                              "changed by this request: queue again (existing clips are never duplicated)") from exc
    session.commit()
    _send(send, to_send)
    result.clip_ids = to_send
    return result


def _create_clips(session: Session, study: Study, batch: Batch, prompts: list[Prompt], seed_list: list[int],
                  specs: dict[int, RunSpec], existing: dict) -> tuple[BatchResult, list[int]]:
    result = BatchResult(batch_id=batch.id)
    to_send: list[int] = []
    # Prompt-major order: both models of a prompt finish close together, so its pair is ready early.
    for prompt in prompts:
        for seed in seed_list:
            for model in study.models:
                clip = existing.get((model.id, prompt.id, seed))
                if clip is not None:
                    result.scope_clip_ids.append(clip.id)
                if clip is None:
                    spec = specs[model.id]
                    clip = Clip(study_id=study.id, model_id=model.id, prompt_id=prompt.id, seed=seed, variant="",
                                origin="generated", status="queued", batch_id=batch.id, width=spec.width,
                                height=spec.height, frames=spec.frames, fps=spec.fps)
                    session.add(clip)
                    session.flush()
                    result.created += 1
                    to_send.append(clip.id)
                    result.scope_clip_ids.append(clip.id)
                elif clip.status == "queued":
                    result.resent += 1
                    clip.queued_at = utcnow()
                    to_send.append(clip.id)
                elif clip.status == "done":
                    result.already_done += 1
                elif clip.status == "running":
                    result.running += 1
                else:
                    result.failed += 1
    return result, to_send


def _send(send: Sender, clip_ids: list[int]) -> None:
    if not clip_ids:
        return
    try:
        send(clip_ids)
    except Exception as exc:  # kombu raises OperationalError, redis ConnectionError, ... depending on transport
        raise BrokerUnavailable(
            f"the clips were recorded but their tasks could not be sent ({type(exc).__name__}: {exc}). Start the "
            f"broker (or check BLINDPAIR_BROKER_URL) and queue again: queueing again sends them without "
            f"duplicating any clip."
        ) from exc


def retry_failed(session: Session, *, study_id: int, clip_ids: Iterable[int] | None = None,
                 send: Sender | None = None) -> int:
    """Put failed clips (all of the study's, or the given ones) back in the queue; returns how many."""
    study = _study(session, study_id)
    run_specs(study)  # a clip that failed on a bad preset fails again: say so now
    if send is None:
        check_broker()
        send = default_sender()
    query = select(Clip.id).where(Clip.study_id == study.id, Clip.status == "failed", Clip.origin == "generated")
    if clip_ids is not None:
        query = query.where(Clip.id.in_(list(clip_ids)))
    ids = list(session.scalars(query.order_by(Clip.id)))
    if ids:
        _write(session, update(Clip).where(Clip.id.in_(ids), Clip.status == "failed")
               .values(status="queued", claimed_by=None, heartbeat_at=None, attempts=0, queued_at=utcnow()))
    session.commit()
    _send(send, ids)
    return len(ids)


# --- worker side -------------------------------------------------------------------------------------------


@dataclass
class Claim:
    outcome: str  # claimed | done | busy | failed | missing
    clip: Clip | None = None


def claim_clip(session: Session, *, clip_id: int, worker: str, lease_seconds: float) -> Claim:
    """Take a clip for generation if it is queued, or running under an expired lease (its worker died)."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_seconds)
    taken = _write(
        session,
        update(Clip)
        .where(Clip.id == clip_id,
               (Clip.status == "queued") | ((Clip.status == "running") & (Clip.heartbeat_at < stale)))
        .values(status="running", claimed_by=worker, heartbeat_at=now, started_at=now, attempts=Clip.attempts + 1),
    )
    # One SELECT for everything the worker reads next (model, preset, study settings, prompt text): lazy loads
    # were four more round trips per clip.
    clip = session.get(Clip, clip_id, populate_existing=True,
                       options=[joinedload(Clip.model).joinedload(StudyModel.study), joinedload(Clip.prompt)])
    if clip is None:
        return Claim("missing")
    if taken:
        return Claim("claimed", clip)
    return Claim({"done": "done", "failed": "failed"}.get(clip.status, "busy"), clip)


def heartbeat(session: Session, *, clip_id: int, worker: str) -> bool:
    """Extend this worker's lease; False when the clip is no longer ours."""
    return bool(_write(
        session,
        update(Clip).where(Clip.id == clip_id, Clip.claimed_by == worker, Clip.status == "running")
        .values(heartbeat_at=utcnow()),
    ))


def release_for_retry(session: Session, *, clip_id: int, worker: str, error: str) -> bool:
    """Give a claimed clip back to the queue (a Celery retry will take it again), keeping the reason."""
    return bool(_write(
        session,
        update(Clip).where(Clip.id == clip_id, Clip.claimed_by == worker, Clip.status == "running")
        .values(status="queued", claimed_by=None, heartbeat_at=None, error=error, queued_at=utcnow()),
    ))


def complete_clip(session: Session, *, clip_id: int, worker: str, result: Any, stored: Any,
                  master: Any = None) -> bool:
    """Record a finished clip if this worker still holds it; False means another worker took over.

    ``master``: the clip's uncompressed master (the worker's path). The clip is then recorded without a served
    file; ``app.services.pair_encoding`` derives it at its group's lossy level once every model's clip of the
    prompt and seed is done, and only then is it paired. Without ``master``, ``stored`` is served as it is.
    """
    generation = result.generation or {}
    if master is not None:
        served: dict[str, Any] = {"storage_name": None, "sha256": None, "size_bytes": None,
                                  "master_name": master.storage_name, "fit_level": generation.get("fit_level", 0),
                                  "lossy_level": None, "psnr_db": None}
    else:
        level = generation.get("gif_lossy_level", -1)  # -1: not recorded
        served = {"storage_name": stored.storage_name, "sha256": stored.sha256, "size_bytes": stored.size_bytes,
                  "lossy_level": (level or 0) if level != -1 else None}
    values = {
        "status": "done", **served, "storage": (master if master is not None else stored).store,
        "width": result.width, "height": result.height, "frames": result.frames,
        "fps": result.fps, "error": None, "wall_seconds": result.wall_seconds,
        "denoise_seconds": result.denoise_seconds, "decode_seconds": result.decode_seconds,
        "encode_seconds": result.encode_seconds, "steps": result.steps, "guidance_scale": result.guidance_scale,
        "unet_evals": result.unet_evals, "peak_memory_bytes": result.peak_memory_bytes, "device": result.device,
        "dtype": result.dtype, "generation": result.generation, "finished_at": utcnow(), "heartbeat_at": None,
    }
    # RETURNING says both whether the row was ours and what pairing needs, without reading the row again.
    done = session.execute(
        update(Clip).where(Clip.id == clip_id, Clip.claimed_by == worker, Clip.status == "running").values(**values)
        .returning(Clip.study_id, Clip.prompt_id),
        execution_options={"synchronize_session": False},
    ).first()
    if done is not None:
        from app.services.attention import schedule_attention_checks
        from app.services.pairs import ensure_pairs

        study_id, prompt_id = done
        ensure_pairs(session, study_id=study_id, prompt_id=prompt_id)
        # Clips made after a study opened need their share of attention checks too (no-op once enough exist).
        schedule_attention_checks(session, study_id=study_id)  # made after the commit, outside the transaction
    return done is not None


def fail_clip(session: Session, *, clip_id: int, worker: str | None, error: str) -> bool:
    query = update(Clip).where(Clip.id == clip_id, Clip.status.in_(("queued", "running")))
    if worker is not None:
        query = query.where(Clip.claimed_by == worker)
    return bool(_write(session, query.values(status="failed", error=error[:4000], finished_at=utcnow(),
                                              heartbeat_at=None)))


def recover_stale(session: Session, *, lease_seconds: float, max_attempts: int) -> list[int]:
    """Requeue running clips whose worker stopped sending heartbeats; returns the ids to send again.

    A clip its workers died on ``max_attempts`` times is failed instead (it may be what kills them).
    """
    stale = utcnow() - timedelta(seconds=lease_seconds)
    rows = session.execute(
        select(Clip.id, Clip.claimed_by, Clip.attempts)
        .where(Clip.status == "running", Clip.heartbeat_at < stale)
    ).all()
    requeued = []
    for clip_id, worker, attempts in rows:
        if attempts >= max_attempts:
            fail_clip(session, clip_id=clip_id, worker=worker,
                      error=f"the worker generating this clip stopped responding {attempts} times (killed? out of "
                            f"host memory?); check the worker logs, then retry it")
            continue
        moved = _write(
            session,
            update(Clip).where(Clip.id == clip_id, Clip.claimed_by == worker, Clip.status == "running",
                               Clip.heartbeat_at < stale)
            .values(status="queued", claimed_by=None, heartbeat_at=None, queued_at=utcnow(),
                    error=f"worker {worker} stopped responding; requeued"),
        )
        if moved:
            requeued.append(clip_id)
    return requeued


def resend_orphans(session: Session, *, queued_for_seconds: float) -> list[int]:
    """Generated clips queued for longer than ``queued_for_seconds``: the ids to send again, their wait restarted.

    Call it only when the broker's queue is empty (``worker.celery_app.sweep_once``): then a clip still
    queued has no message. That happens when a worker is killed between taking a message and claiming its
    clip (kombu's SQLAlchemy broker never gives a taken message back), or when sending failed after the clip
    was recorded. A duplicate message does no harm: ``claim_clip`` skips a clip that is running or done.
    """
    cutoff = utcnow() - timedelta(seconds=queued_for_seconds)
    ids = list(session.scalars(
        select(Clip.id).where(Clip.status == "queued", Clip.origin == "generated",
                              func.coalesce(Clip.queued_at, Clip.created_at) < cutoff).order_by(Clip.id)))
    if ids:
        _write(session, update(Clip).where(Clip.id.in_(ids), Clip.status == "queued").values(queued_at=utcnow()))
    return ids


# --- reading -----------------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default, 'type 7' of Hyndman & Fan 1996)."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _live_workers(session: Session, study_id: int, within_seconds: float = 300) -> tuple[int, int]:
    """Workers holding a live lease on a clip of the study, and the clips they hold (several per worker with
    ``blindpair worker --concurrency N``)."""
    since = utcnow() - timedelta(seconds=within_seconds)
    workers, clips = session.execute(
        select(func.count(func.distinct(Clip.claimed_by)), func.count())
        .where(Clip.study_id == study_id, Clip.status == "running", Clip.heartbeat_at >= since)
    ).one()
    return workers or 0, clips or 0


def _seconds_per_clip(wall: float, on_device: float | None, in_flight: float) -> float:
    """How long a worker takes per clip of a model when it holds ``in_flight`` clips at once.

    With one clip at a time, its wall time. With several, they take turns on the device and encode their GIFs
    beside each other's turn (worker/generate.py), so a worker finishes one clip per wall / N, but never
    faster than one per model seconds, the device part. On an H100 this predicts 0.85 s for two Lightning
    clips in flight, against 1.05 s measured (BENCHMARKS.md) and 1.7 s from the wall time alone.
    """
    if in_flight <= 1 or on_device is None:
        return wall
    return max(on_device, wall / in_flight)


def generation_progress(session: Session, *, study_id: int) -> dict[str, Any]:
    """Per-model counts of queued/running/done/failed clips, with an ETA from the median clip time."""
    study = _study(session, study_id)
    counts: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STATES, 0))
    for model_id, status, n in session.execute(
        select(Clip.model_id, Clip.status, func.count()).where(Clip.study_id == study.id, Clip.variant == "")
        .group_by(Clip.model_id, Clip.status)
    ):
        counts[model_id][status] = n
    times, device_times = _clip_times(session, study.id)
    try:
        specs = run_specs(study)
        config_error = None
    except GenerationError as exc:
        specs, config_error = {}, str(exc)
    live, in_flight = _live_workers(session, study.id)
    per_worker = in_flight / live if live else 1.0
    models: list[dict[str, Any]] = []
    total_work = 0.0
    eta_known = True
    for m in study.models:
        c = counts[m.id]
        median = statistics.median(times[m.id]) if times[m.id] else None
        remaining = c["queued"] + c["running"]
        if remaining and median is None:
            eta_known = False
        per_clip = None
        if median is not None:
            device = statistics.median(device_times[m.id]) if device_times[m.id] else None
            per_clip = _seconds_per_clip(median, device, per_worker)
            total_work += remaining * per_clip
        models.append({
            "model_id": m.id, "name": m.name, "preset": m.preset, **c, "total": sum(c.values()),
            "median_seconds": median, "eta_seconds": remaining * per_clip if per_clip is not None else None,
            "run": specs[m.id].describe() if m.id in specs else None,
        })
    totals = {s: sum(m[s] for m in models) for s in STATES}
    remaining = totals["queued"] + totals["running"]
    eta = total_work / max(live, 1) if eta_known else None
    failed = session.execute(
        select(Clip.id, StudyModel.name, Prompt.external_id, Clip.seed, Clip.error, Clip.attempts)
        .join(StudyModel, StudyModel.id == Clip.model_id).join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Clip.study_id == study.id, Clip.status == "failed").order_by(Clip.id).limit(50)
    ).all()
    return {
        "study_id": study.id, "models": models, "totals": totals, "remaining": remaining,
        "live_workers": live, "clips_in_flight": in_flight, "eta_seconds": eta if remaining else 0.0,
        "config_error": config_error,
        "failed_clips": [{"clip_id": r[0], "model": r[1], "prompt": r[2], "seed": r[3], "error": r[4],
                          "attempts": r[5]} for r in failed],
    }


def _clip_times(session: Session, study_id: int) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """Per model, the wall seconds and the model seconds (``model_seconds``) of its generated clips."""
    walls: dict[int, list[float]] = defaultdict(list)
    on_device: dict[int, list[float]] = defaultdict(list)
    for model_id, wall, denoise, decode in session.execute(
        select(Clip.model_id, Clip.wall_seconds, Clip.denoise_seconds, Clip.decode_seconds).where(
            Clip.study_id == study_id, Clip.status == "done", Clip.origin == "generated",
            Clip.wall_seconds.is_not(None))
    ):
        if wall is not None:  # excluded by the query; the check tells the type checker
            walls[model_id].append(wall)
        if (seconds := model_seconds(denoise, decode)) is not None:
            on_device[model_id].append(seconds)
    return walls, on_device


def model_seconds(denoise: float | None, decode: float | None) -> float | None:
    """A clip's time on the device: denoising plus VAE decoding, the part that is the model's cost.

    The wall time also holds the GIF encoding, which is BlindPair's storage format rather than the model's
    work, costs both models about the same (~0.7-1.6 s on a 16-core server, bench.gpu_generation) and runs
    beside the next clip's device time with ``--concurrency 2``. Left in, it hid most of Lightning's lead:
    2.5x by wall time against 7.1x by device time on an H100 (BENCHMARKS.md)."""
    if denoise is None:
        return None
    return denoise + (decode or 0.0)


def _median_of_recorded(values: list[float | None]) -> float | None:
    """The median of the figures a worker recorded (a clip written by another tool may lack one)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def memory_check(session: Session, study: Study) -> dict[str, Any]:
    """For the study page, before generation: each model that fits none of the connected workers' GPUs (or only with
    offloading, which slows it and so changes the speed comparison), from the presets' stated peak-memory
    estimates; and a note when the study mixes model families."""
    presets = [m.preset for m in study.models if m.preset]
    out: dict[str, Any] = {"gpus": [], "gpu_warnings": [], "family_note": mixed_family_note(presets)}
    try:
        specs = run_specs(study)
    except GenerationError:
        return out  # the panel already shows why the models cannot be generated
    gpus = connected_gpus(session)
    out["gpus"] = gpus
    out["gpu_warnings"] = fit_warnings([(m.name, specs[m.id]) for m in study.models if m.id in specs], gpus)
    return out


def cost_summary(session: Session, *, study_id: int, batch_id: int | None = None) -> list[dict[str, Any]]:
    """Per model, from the recorded costs of generated clips (of one batch, if given): median/p90 wall seconds
    per clip, median model seconds (``model_seconds``), UNet evaluations, peak memory, device-seconds in all,
    and the speedup against the slowest model by model seconds."""
    study = _study(session, study_id)
    rows: dict[int, list[Clip]] = defaultdict(list)
    query = select(Clip).where(Clip.study_id == study.id, Clip.status == "done", Clip.origin == "generated",
                               Clip.wall_seconds.is_not(None))
    if batch_id is not None:
        query = query.where(Clip.batch_id == batch_id)
    for clip in session.scalars(query):
        rows[clip.model_id].append(clip)
    out: list[dict[str, Any]] = []
    for m in study.models:
        # The first clip after a pipeline load pays one-off costs (kernels chosen, caches filled): reported,
        # but left out of the medians unless it is all there is.
        warmups = [c for c in rows[m.id] if (c.generation or {}).get("warmup")]
        clips = [c for c in rows[m.id] if not (c.generation or {}).get("warmup")] or rows[m.id]
        resident = [int(c.generation["pipelines_resident"]) for c in clips
                    if (c.generation or {}).get("pipelines_resident") is not None]
        walls = [c.wall_seconds for c in clips if c.wall_seconds is not None]
        on_device = [t for c in clips if (t := model_seconds(c.denoise_seconds, c.decode_seconds)) is not None]
        evals = [c.unet_evals for c in clips if c.unet_evals is not None]
        peaks = [c.peak_memory_bytes for c in clips if c.peak_memory_bytes is not None]
        last = max(clips, key=lambda c: c.id) if clips else None
        gen = (last.generation or {}) if last else {}
        out.append({
            "model_id": m.id, "name": m.name, "preset": m.preset, "clips": len(clips),
            "warmup_clips": len(warmups), "warmup_only": bool(warmups) and len(warmups) == len(rows[m.id]),
            # Peak memory includes every pipeline resident beside this one (worker/generate.py).
            "pipelines_resident": max(resident) if resident else None,
            "median_seconds": statistics.median(walls) if walls else None,
            "p90_seconds": _percentile(walls, 0.9),
            "median_denoise_seconds": _median_of_recorded([c.denoise_seconds for c in clips]),
            "median_decode_seconds": _median_of_recorded([c.decode_seconds for c in clips]),
            "median_encode_seconds": _median_of_recorded([c.encode_seconds for c in clips]),
            "unet_evals": statistics.median(evals) if evals else None,
            "peak_memory_bytes": max(peaks) if peaks else None,
            "median_model_seconds": statistics.median(on_device) if on_device else None,
            "device_seconds": sum(on_device),
            "devices": sorted({c.device for c in clips if c.device}),
            "dtypes": sorted({c.dtype for c in clips if c.dtype}),
            "steps": last.steps if last else None,
            "guidance": last.guidance_scale if last else None,
            "scheduler": gen.get("scheduler_class"),
            "scheduler_config": gen.get("scheduler_config"),
            # How the weights sat on the GPU (worker/presets.py plan_memory): offloading slows a model down, so a
            # speed-up between models run in different modes says so.
            "offload": sorted({str((c.generation or {}).get("offload")) for c in clips
                               if (c.generation or {}).get("offload")}),
            "speedup_vs_slowest": None,
        })
    medians = [r["median_model_seconds"] for r in out if r["median_model_seconds"]]
    if medians:
        slowest = max(medians)
        for r in out:
            if r["median_model_seconds"]:
                r["speedup_vs_slowest"] = slowest / r["median_model_seconds"]
    return out
