"""The schema. Every change here needs a migration under ``migrations/versions``."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_token(nbytes: int = 24) -> str:
    """An unguessable URL-safe token (192 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def token_digest(token: str) -> str:
    """What is stored of a bearer token (a login session's): its SHA-256, so a leaked table logs nobody in."""
    return hashlib.sha256(token.encode()).hexdigest()


TZDateTime = DateTime(timezone=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))  # admin | researcher
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("role IN ('admin', 'researcher')", name="role"),)


class UserSession(Base):
    """One login of a researcher or admin, held server-side so that logout and a password change end it.

    The signed session cookie carries only a random token; this row stores its SHA-256. A cookie whose row
    is gone (logged out, password changed) or past ``expires_at`` is no login, however valid its signature.
    """

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime)


class StudyCollaborator(Base):
    """A researcher the study's owner shared it with: they see and run it like the owner, but cannot share it."""

    __tablename__ = "study_collaborators"

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="draft")  # draft | open | closed
    # Generation settings standardised across the study's models: seeds, frames, width, height, fps,
    # negative_prompt, base_model, dtype.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    votes_per_pair: Mapped[int] = mapped_column(Integer, default=5)
    pairs_per_session: Mapped[int] = mapped_column(Integer, default=10)
    sessions_per_invite: Mapped[int] = mapped_column(Integer, default=0)  # 0 = unlimited
    invite_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    redirect_url: Mapped[str] = mapped_column(String(500), default="")
    # Quality-control settings (attention-check rate, minimum seconds per vote, ...).
    qc: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Optional answers (app/services/answers.py): a "both are bad" choice, reason tags, a comment per pair.
    answer_options: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The owner: they, the collaborators (StudyCollaborator) and admins see the study; nobody else does.
    # A study made without an owner (the CLI without --owner) is seen by admins only, until shared.
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)

    models: Mapped[list[StudyModel]] = relationship(
        back_populates="study", order_by="StudyModel.position", cascade="all, delete-orphan"
    )
    criteria: Mapped[list[Criterion]] = relationship(
        back_populates="study", order_by="Criterion.position", cascade="all, delete-orphan"
    )
    prompts: Mapped[list[Prompt]] = relationship(back_populates="study", cascade="all, delete-orphan")

    __table_args__ = (
        CheckConstraint("status IN ('draft', 'open', 'closed')", name="status"),
        CheckConstraint("votes_per_pair >= 1", name="votes_per_pair_positive"),
        CheckConstraint("pairs_per_session >= 1", name="pairs_per_session_positive"),
    )


class StudyModel(Base):
    """A model under comparison in one study: a preset plus per-model overrides."""

    __tablename__ = "study_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    preset: Mapped[str] = mapped_column(String(100), default="")
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # steps, guidance, ...
    position: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="models")

    __table_args__ = (UniqueConstraint("study_id", "name"),)


class Criterion(Base):
    __tablename__ = "criteria"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(60))
    label: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="criteria")

    __table_args__ = (UniqueConstraint("study_id", "key"),)


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(100))  # the id in the suite / CSV, e.g. "urban-003"
    text: Mapped[str] = mapped_column(Text)
    theme: Mapped[str] = mapped_column(String(100), index=True)
    detail: Mapped[str] = mapped_column(String(10), default="medium")  # short | medium | long
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)

    study: Mapped[Study] = relationship(back_populates="prompts")

    __table_args__ = (
        UniqueConstraint("study_id", "external_id"),
        CheckConstraint("detail IN ('short', 'medium', 'long')", name="detail"),
    )


class Clip(Base):
    """One GIF of one model for one prompt and seed, with where it came from and what it cost."""

    __tablename__ = "clips"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("study_models.id", ondelete="CASCADE"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    # generated (by the worker) | imported (import-gifs) | degraded (attention-check copy)
    origin: Mapped[str] = mapped_column(String(20), default="imported")
    source_clip_id: Mapped[int | None] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    # "" for a real clip; e.g. "frozen" / "noise" / "scrambled" for a degraded attention-check copy.
    variant: Mapped[str] = mapped_column(String(20), default="")
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|done|failed
    # The only handle an evaluator ever sees; the stored file has an unrelated random name.
    media_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    storage_name: Mapped[str | None] = mapped_column(String(100))
    # Which store holds the file (app/media/storage.py): "local" or "s3"; set by whoever stored it.
    storage: Mapped[str] = mapped_column(String(8), default="local", server_default="local")
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    frames: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Cost, recorded by the worker.
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    denoise_seconds: Mapped[float | None] = mapped_column(Float)
    decode_seconds: Mapped[float | None] = mapped_column(Float)
    encode_seconds: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[int | None] = mapped_column(Integer)
    guidance_scale: Mapped[float | None] = mapped_column(Float)
    unet_evals: Mapped[int | None] = mapped_column(Integer)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    device: Mapped[str | None] = mapped_column(String(200))
    dtype: Mapped[str | None] = mapped_column(String(20))
    generation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # versions, scheduler config…
    # GIF compression, one level per pair (worker/pair_encoding.py). master_name: the uncompressed master the
    # served file is derived from (never served); fit_level: the mildest gifsicle lossy level at which this clip
    # alone fits the page budget; lossy_level: the level of the served file, the same for every clip of its
    # prompt and seed (0: no lossy step; NULL: not compressed by BlindPair, e.g. imported); psnr_db: the served
    # file against the master (NULL where they are equal).
    master_name: Mapped[str | None] = mapped_column(String(100))
    fit_level: Mapped[int | None] = mapped_column(Integer)
    lossy_level: Mapped[int | None] = mapped_column(Integer)
    psnr_db: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    # When the clip last went into the queue (created, retried, requeued, sent again): a clip queued long ago
    # while the broker's queue is empty lost its message, and the sweeper sends it again.
    queued_at: Mapped[datetime | None] = mapped_column(TZDateTime, default=utcnow)
    # Worker lease: who is generating the clip and when it last said so. kombu's SQLAlchemy broker never
    # redelivers a message taken by a worker that died, so a stale heartbeat is how a dead worker's clip is found.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(TZDateTime)

    model: Mapped[StudyModel] = relationship()
    prompt: Mapped[Prompt] = relationship()

    __table_args__ = (
        UniqueConstraint("model_id", "prompt_id", "seed", "variant"),
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
    )


class Pair(Base):
    """Two done clips of different models for the same prompt and seed (clip_a's model comes first)."""

    __tablename__ = "pairs"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    clip_a_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    clip_b_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    # normal | check_same (clip vs itself) | check_degraded (clip vs degraded copy; clip_a is the original)
    kind: Mapped[str] = mapped_column(String(20), default="normal")
    # Denormalised counters, updated in the same transaction as the rows they count.
    votes_count: Mapped[int] = mapped_column(Integer, default=0)
    assigned_count: Mapped[int] = mapped_column(Integer, default=0)
    a_left_count: Mapped[int] = mapped_column(Integer, default=0)

    clip_a: Mapped[Clip] = relationship(foreign_keys=[clip_a_id])
    clip_b: Mapped[Clip] = relationship(foreign_keys=[clip_b_id])
    prompt: Mapped[Prompt] = relationship()

    __table_args__ = (UniqueConstraint("clip_a_id", "clip_b_id"),)


class Evaluator(Base):
    """One evaluator session, joined through a study's invite link."""

    __tablename__ = "evaluators"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    external_id: Mapped[str | None] = mapped_column(String(200))  # e.g. PROLIFIC_PID
    platform_session_id: Mapped[str | None] = mapped_column(String(200))
    completion_code: Mapped[str] = mapped_column(String(32), default=lambda: secrets.token_hex(4).upper())
    ip_hash: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    consented_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)

    __table_args__ = (
        # Votes ask "does another session of this study share my address?" and "how many sessions of this
        # study have completed?" (the QC re-judging triggers, app/services/qc.py): index lookups, not a scan of
        # every session of the study on each vote.
        Index("ix_evaluators_study_id_ip_hash", "study_id", "ip_hash"),
        Index("ix_evaluators_study_id_completed_at", "study_id", "completed_at"),
    )


class Assignment(Base):
    """A pair shown to an evaluator, with which clip was on the left."""

    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    evaluator_id: Mapped[int] = mapped_column(ForeignKey("evaluators.id", ondelete="CASCADE"), index=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 1-based order within the evaluator's session
    left_clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    right_clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | done
    shown_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(TZDateTime)

    evaluator: Mapped[Evaluator] = relationship()
    pair: Mapped[Pair] = relationship()

    __table_args__ = (
        # An evaluator never gets the same pair twice.
        UniqueConstraint("evaluator_id", "pair_id"),
        UniqueConstraint("evaluator_id", "position"),
        # Choosing a pair counts each pair's open assignments shown since the abandon limit (its live
        # reservations) on every new page: this index answers that from the index alone, a short range scan
        # with no lookup of the rows (with 2,000 raters on screen: 215 µs per choice on SQLite, 720 µs with
        # (pair_id, status), which had to read each open row for its shown_at).
        Index("ix_assignments_pair_id_status_shown_at", "pair_id", "status", "shown_at"),
    )


class Vote(Base):
    """One submitted assignment. ``assignment_id`` is unique: a resubmission cannot add a second vote."""

    __tablename__ = "votes"

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    evaluator_id: Mapped[int] = mapped_column(ForeignKey("evaluators.id", ondelete="CASCADE"), index=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"), index=True)
    shown_at: Mapped[datetime] = mapped_column(TZDateTime)
    submitted_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    time_spent_ms: Mapped[int] = mapped_column(Integer)  # server-side: submitted_at - shown_at
    client_time_ms: Mapped[int | None] = mapped_column(Integer)  # what the page measured, if sent
    too_fast: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the evaluator gave beside the answers, where the study asks for it (Study.answer_options).
    comment: Mapped[str | None] = mapped_column(Text)
    reason_tags: Mapped[list[str] | None] = mapped_column(JSON)

    choices: Mapped[list[VoteChoice]] = relationship(back_populates="vote", cascade="all, delete-orphan")


class VoteChoice(Base):
    """One criterion of one vote, stored both as clicked (side) and in model space (winner)."""

    __tablename__ = "vote_choices"

    id: Mapped[int] = mapped_column(primary_key=True)
    vote_id: Mapped[int] = mapped_column(ForeignKey("votes.id", ondelete="CASCADE"), index=True)
    criterion_id: Mapped[int] = mapped_column(ForeignKey("criteria.id", ondelete="CASCADE"), index=True)
    side: Mapped[str] = mapped_column(String(10))  # left | right | tie
    model_a_id: Mapped[int] = mapped_column(ForeignKey("study_models.id", ondelete="CASCADE"))
    model_b_id: Mapped[int] = mapped_column(ForeignKey("study_models.id", ondelete="CASCADE"))
    outcome: Mapped[str] = mapped_column(String(10))  # a | b | tie  (a = the pair's clip_a model won)
    winner_model_id: Mapped[int | None] = mapped_column(ForeignKey("study_models.id", ondelete="CASCADE"))

    vote: Mapped[Vote] = relationship(back_populates="choices")

    __table_args__ = (
        UniqueConstraint("vote_id", "criterion_id"),
        CheckConstraint("side IN ('left', 'right', 'tie', 'both_bad')", name="side"),
        CheckConstraint("outcome IN ('a', 'b', 'tie')", name="outcome"),
    )


class RejudgingDebt(Base):
    """A study-wide QC re-judging (``rule``: 'clusters' or 'reliability') that a vote triggered and that has not
    run since (app/services/rejudging_debts.py). Written in the triggering vote's own transaction and deleted by
    the re-judging that read it before taking its snapshot: kept in the database, not in a web process, so any
    process's results settle it and a process that dies owing it loses nothing."""

    __tablename__ = "rejudging_debts"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)

    __table_args__ = (Index("ix_rejudging_debts_study_id_rule", "study_id", "rule"),)


class Batch(Base):
    """A generation batch queued by a researcher: prompts x models x seeds."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # theme / prompt ids / seeds
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)


class ClipMetric(Base):
    """One automatic metric of one clip (app/metrics, worker/metrics.py), measured on the stored GIF.

    ``version`` names the metric's definition and parameters: a changed definition gets a new version, so values
    computed under the old one are never mixed with new ones. ``sha256`` is the file the value was measured on: a
    clip whose file was replaced (import --replace) has stale metrics until they are computed again.
    """

    __tablename__ = "clip_metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(60))
    version: Mapped[str] = mapped_column(String(60))
    value: Mapped[float] = mapped_column(Float)
    per_frame: Mapped[list[float | None] | None] = mapped_column(JSON)  # per frame (or frame pair), if any
    sha256: Mapped[str | None] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("clip_id", "name", "version"),)


class StudyPlan(Base):
    """The study's pre-registered question (app/services/plans.py): hypotheses per criterion, alpha, power, budget.

    A draft (``frozen_at`` None) may be edited until the study opens; opening freezes it. A frozen plan is never
    changed: an amendment is a new version, chained by hash to the one it amends, so a report shows both and
    proves which question was asked before which votes (``votes_at_freeze``)."""

    __tablename__ = "study_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text, default="")  # why an amendment was made (required for version > 1)
    sha256: Mapped[str | None] = mapped_column(String(64))  # set when frozen
    previous_sha256: Mapped[str | None] = mapped_column(String(64))
    votes_at_freeze: Mapped[int | None] = mapped_column(Integer)
    frozen_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("study_id", "version"),)


class WorkerDevice(Base):
    """What a generation worker runs on, as it last reported (at start and with each clip): the study page compares
    each model's stated memory need with the GPUs of the workers seen lately and warns before generation."""

    __tablename__ = "worker_devices"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)  # worker_identity(): host and process
    device: Mapped[str] = mapped_column(String(200))  # "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu (x86_64)"
    total_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)  # of the GPU; None on a CPU worker
    seen_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
