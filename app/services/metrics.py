"""Automatic metrics per clip: which clips need them, measuring a clip's stored file, storing the values with their
versions, progress, the per-clip table, and queueing a study's clips for the worker.

Measuring is seconds of CPU per clip, so it never runs inside a transaction: each clip is read in one short
transaction, measured outside any, and stored in another (on SQLite every transaction holds the write lock).
The weight-free metrics come from ``app.metrics``; a caller that has model weights (the worker, ``blindpair
metrics compute --clip``) passes ``extra``, a function that adds its own (CLIP relevance, ``worker/metrics.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import session_scope
from app.media.storage import read_bytes
from app.metrics import (
    CLIP_SCORE,
    METRICS,
    WEIGHT_FREE,
    FramesError,
    MetricValue,
    compute_weight_free,
    read_gif_frames,
)
from app.metrics.registry import Measurement
from app.models import Clip, ClipMetric, Prompt, StudyModel, utcnow
from app.services import task_queue

log = logging.getLogger(__name__)
CLIP_VERSION_PREFIX = "clip/"
# (frames, prompt text) -> metrics that need weights; raises to report a clip it could not measure.
Extra = Callable[[np.ndarray, str], Measurement]
Progress = Callable[[int, int], None]


class MetricsError(ValueError):
    """The metrics could not be queued or computed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ClipTarget:
    """What measuring one clip needs, read in one short transaction."""

    clip_id: int
    storage_name: str
    sha256: str | None
    prompt: str
    storage: str = "local"


@dataclass
class ComputeSummary:
    measured: int = 0
    skipped_current: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    not_computed: dict[str, str] = field(default_factory=dict)  # metric -> why it was left out
    seconds: float = 0.0


def _real_clips(study_id: int) -> Any:
    """Done clips that raters see (attention-check copies are not generations)."""
    return (select(Clip.id, Clip.storage_name, Clip.sha256, Prompt.text, Clip.storage)
            .join(Prompt, Prompt.id == Clip.prompt_id)
            .where(Clip.study_id == study_id, Clip.status == "done", Clip.variant == "",
                   Clip.storage_name.is_not(None))
            .order_by(Clip.id))


def targets(session: Session, *, study_id: int, clip_ids: Iterable[int] | None = None) -> list[ClipTarget]:
    query = _real_clips(study_id)
    if clip_ids is not None:
        query = query.where(Clip.id.in_(list(clip_ids)))
    return [ClipTarget(cid, name, sha, text, store) for cid, name, sha, text, store in session.execute(query)]


def clip_target(session: Session, *, clip_id: int) -> ClipTarget | None:
    row = session.execute(
        select(Clip.id, Clip.storage_name, Clip.sha256, Prompt.text, Clip.storage)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Clip.id == clip_id, Clip.status == "done", Clip.storage_name.is_not(None))
    ).first()
    if row is None or row[1] is None:
        return None
    return ClipTarget(row[0], row[1], row[2], row[3], row[4])


def _is_current(name: str, version: str) -> bool:
    if name == CLIP_SCORE:
        return version.startswith(CLIP_VERSION_PREFIX)
    return any(m.name == name and m.version == version for m in WEIGHT_FREE)


def current_names(session: Session, *, clip_ids: list[int]) -> dict[int, set[str]]:
    """Per clip, the metrics stored under their current version and measured on the clip's current file."""
    out: dict[int, set[str]] = {cid: set() for cid in clip_ids}
    if not clip_ids:
        return out
    rows = session.execute(
        select(ClipMetric.clip_id, ClipMetric.name, ClipMetric.version)
        .join(Clip, Clip.id == ClipMetric.clip_id)
        .where(ClipMetric.clip_id.in_(clip_ids),
               (ClipMetric.sha256 == Clip.sha256) | Clip.sha256.is_(None))
    )
    for clip_id, name, version in rows:
        if _is_current(name, version):
            out[clip_id].add(name)
    return out


WEIGHT_FREE_NAMES = frozenset(m.name for m in WEIGHT_FREE)


def needing(session: Session, *, study_id: int, with_weights: bool = False) -> list[ClipTarget]:
    """The study's clips missing a current weight-free metric (or CLIP relevance, ``with_weights``)."""
    todo = targets(session, study_id=study_id)
    have = current_names(session, clip_ids=[t.clip_id for t in todo])
    wanted = WEIGHT_FREE_NAMES | ({CLIP_SCORE} if with_weights else set())
    return [t for t in todo if not wanted <= have[t.clip_id]]


def store(session: Session, *, clip_id: int, sha256: str | None, values: Mapping[str, MetricValue]) -> int:
    """Write the values (replacing any of the same clip, metric and version); returns rows written."""
    for name, v in values.items():
        session.execute(delete(ClipMetric).where(ClipMetric.clip_id == clip_id, ClipMetric.name == name,
                                                 ClipMetric.version == v.version))
        session.add(ClipMetric(clip_id=clip_id, name=name, version=v.version, value=float(v.value),
                               per_frame=list(v.per_frame) if v.per_frame is not None else None,
                               sha256=sha256, computed_at=utcnow()))
    session.flush()
    return len(values)


def measure(target: ClipTarget, *, names: set[str] | None = None, extra: Extra | None = None) -> Measurement:
    """Read the clip's stored file and compute its metrics (no database: call it outside a transaction)."""
    frames = read_gif_frames(read_bytes(target.storage_name, target.storage))
    measured = compute_weight_free(frames, names=names)
    if extra is not None:
        more = extra(frames, target.prompt)
        measured.values.update(more.values)
        measured.skipped.update(more.skipped)
    return measured


def compute_clips(clip_ids: list[int], *, force: bool = False, extra: Extra | None = None,
                  progress: Progress | None = None) -> ComputeSummary:
    """Measure and store each clip in turn (its own transactions); a clip that fails is reported, not raised.

    Without ``force``, metrics already current for a clip are not computed again (all of a clip's flow-based
    metrics come from one flow, so a clip missing any of them gets all three)."""
    summary = ComputeSummary()
    started = time.perf_counter()
    for done, clip_id in enumerate(clip_ids, start=1):
        with session_scope() as session:
            target = clip_target(session, clip_id=clip_id)
            have = set() if force or target is None else current_names(session, clip_ids=[clip_id])[clip_id]
        if target is None:
            summary.failed[clip_id] = "not a finished clip with a stored file"
        else:
            _compute_one(target, have=have, force=force, extra=extra, summary=summary)
        if progress:
            progress(done, len(clip_ids))
    summary.seconds = time.perf_counter() - started
    return summary


_FLOW_FAMILY = {"motion_mean", "motion_p95", "warp_error"}


def _compute_one(target: ClipTarget, *, have: set[str], force: bool, extra: Extra | None,
                 summary: ComputeSummary) -> None:
    missing = set(WEIGHT_FREE_NAMES) if force else set(WEIGHT_FREE_NAMES) - have
    if missing & _FLOW_FAMILY:
        missing |= _FLOW_FAMILY
    want_extra = extra if extra is not None and (force or CLIP_SCORE not in have) else None
    if not missing and want_extra is None:
        summary.skipped_current += 1
        return
    try:
        measured = measure(target, names=missing, extra=want_extra)
    except (FramesError, OSError) as exc:
        summary.failed[target.clip_id] = f"could not read the clip's file: {exc}"
        return
    except Exception as exc:  # one clip's failure (a weights problem, a bad frame) must not stop the others
        log.exception("metrics of clip %s failed", target.clip_id)
        summary.failed[target.clip_id] = f"{type(exc).__name__}: {exc}"
        return
    summary.not_computed.update(measured.skipped)
    try:
        with session_scope() as session:
            store(session, clip_id=target.clip_id, sha256=target.sha256, values=measured.values)
    except IntegrityError:  # another worker stored the same clip's metrics a moment ago: theirs are as good
        log.info("metrics of clip %s were stored concurrently by another worker", target.clip_id)
    summary.measured += 1


def compute_study(study_id: int, *, force: bool = False, extra: Extra | None = None,
                  progress: Progress | None = None) -> ComputeSummary:
    """Every clip of the study that lacks a current metric (every clip with ``force``)."""
    with session_scope() as session:
        if force:
            ids = [t.clip_id for t in targets(session, study_id=study_id)]
        else:
            ids = [t.clip_id for t in needing(session, study_id=study_id, with_weights=extra is not None)]
    return compute_clips(ids, force=force, extra=extra, progress=progress)


# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricsProgress:
    clips: int  # done clips raters see
    measured: int  # with every current weight-free metric
    with_clip: int  # with a CLIP relevance score
    latest: datetime | None

    @property
    def missing(self) -> int:
        return self.clips - self.measured


def metrics_progress(session: Session, *, study_id: int) -> MetricsProgress:
    ids = [cid for cid, *_ in session.execute(_real_clips(study_id))]
    have = current_names(session, clip_ids=ids)
    latest = session.scalar(select(func.max(ClipMetric.computed_at)).join(Clip, Clip.id == ClipMetric.clip_id)
                            .where(Clip.study_id == study_id))
    return MetricsProgress(clips=len(ids), measured=sum(WEIGHT_FREE_NAMES <= h for h in have.values()),
                           with_clip=sum(CLIP_SCORE in h for h in have.values()), latest=latest)


def queue_study(session: Session, *, study_id: int, force: bool = False) -> int:
    """Send the study's clips that need metrics (all of them with ``force``) to the workers; returns how many.

    The workers compute the weight-free metrics and, where they have the weights, CLIP relevance."""
    queue = task_queue.current()
    send = getattr(queue, "send_metrics", None)
    if send is None:
        raise MetricsError("this task queue cannot compute metrics; run `blindpair metrics compute STUDY`")
    problem = queue.problem()
    if problem:
        raise MetricsError(problem)
    todo = targets(session, study_id=study_id) if force else needing(session, study_id=study_id, with_weights=True)
    ids = [t.clip_id for t in todo]
    if ids:
        send(ids, force=force)
    return len(ids)


# ------------------------------------------------------------------------------------------------------------------
def metrics_fingerprint(session: Session, *, study_id: int) -> str:
    """Changes whenever a metric of the study's clips is stored or a clip's file changes (cheap: two aggregates)."""
    n, last_id, last_at = session.execute(
        select(func.count(ClipMetric.id), func.coalesce(func.max(ClipMetric.id), 0), func.max(ClipMetric.computed_at))
        .join(Clip, Clip.id == ClipMetric.clip_id).where(Clip.study_id == study_id)
    ).one()
    clips, sha_changes = session.execute(
        select(func.count(Clip.id), func.max(Clip.finished_at)).where(Clip.study_id == study_id, Clip.status == "done")
    ).one()
    return f"{n}-{last_id}-{last_at}-{clips}-{sha_changes}"


def clip_metric_rows(session: Session, *, study_id: int) -> pd.DataFrame:
    """Current metric values of the study's real clips: clip_id, model, prompt, seed, metric, value, version,
    computed_at. CLIP relevance computed with several models: the one that covers most clips is used."""
    rows = session.execute(
        select(ClipMetric.clip_id, StudyModel.name, Prompt.external_id, Clip.seed, ClipMetric.name,
               ClipMetric.value, ClipMetric.version, ClipMetric.computed_at)
        .join(Clip, Clip.id == ClipMetric.clip_id)
        .join(StudyModel, StudyModel.id == Clip.model_id)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Clip.study_id == study_id, Clip.status == "done", Clip.variant == "",
               (ClipMetric.sha256 == Clip.sha256) | Clip.sha256.is_(None))
    ).all()
    frame = pd.DataFrame(rows, columns=["clip_id", "model", "prompt", "seed", "metric", "value", "version",
                                        "computed_at"])
    if frame.empty:
        return frame
    current = np.array([_is_current(n, v) for n, v in zip(frame["metric"], frame["version"], strict=True)])
    frame = frame[current]
    clip_rows = frame["metric"] == CLIP_SCORE
    if clip_rows.any():
        chosen = frame.loc[clip_rows, "version"].value_counts().index[0]
        frame = frame[~clip_rows | (frame["version"] == chosen)]
    return frame.reset_index(drop=True)


def clip_costs(session: Session, *, study_id: int) -> pd.DataFrame:
    """clip_id, model, seconds: the model's time on the device per clip (denoising + VAE decoding, as the study
    page's GPU-seconds), or wall time where the split was not recorded; NaN for imported clips."""
    rows = session.execute(
        select(Clip.id, StudyModel.name, Clip.denoise_seconds, Clip.decode_seconds, Clip.wall_seconds)
        .join(StudyModel, StudyModel.id == Clip.model_id)
        .where(Clip.study_id == study_id, Clip.status == "done", Clip.variant == "")
    ).all()
    frame = pd.DataFrame(rows, columns=["clip_id", "model", "denoise", "decode", "wall"])
    device = frame["denoise"].astype(float) + frame["decode"].astype(float).fillna(0.0)
    frame["seconds"] = device.where(frame["denoise"].notna(), frame["wall"].astype(float))
    return frame[["clip_id", "model", "seconds"]]


def metrics_table(session: Session, *, study_id: int) -> pd.DataFrame:
    """One row per clip: who made it, for which prompt and seed, what it cost, and one column per metric."""
    values = clip_metric_rows(session, study_id=study_id)
    clips = session.execute(
        select(Clip.id, StudyModel.name, Prompt.external_id, Prompt.theme, Clip.seed, Clip.origin, Clip.sha256)
        .join(StudyModel, StudyModel.id == Clip.model_id).join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Clip.study_id == study_id, Clip.status == "done", Clip.variant == "").order_by(Clip.id)
    ).all()
    table = pd.DataFrame(clips, columns=["clip_id", "model", "prompt", "theme", "seed", "origin", "sha256"])
    table = table.merge(clip_costs(session, study_id=study_id)[["clip_id", "seconds"]], on="clip_id", how="left")
    table = table.rename(columns={"seconds": "gpu_seconds"})
    names = [m.name for m in METRICS]
    if len(values):
        wide = values.pivot_table(index="clip_id", columns="metric", values="value", aggfunc="first")
        versions = values.groupby("clip_id").apply(
            lambda g: ";".join(f"{n}={v}" for n, v in sorted(zip(g["metric"], g["version"], strict=True))),
            include_groups=False)
    else:
        wide, versions = pd.DataFrame(index=pd.Index([], name="clip_id")), pd.Series(dtype=str)
    for name in names:
        table[name] = table["clip_id"].map(wide[name]) if name in wide.columns else np.nan
    table["metric_versions"] = table["clip_id"].map(versions).fillna("")
    return table
