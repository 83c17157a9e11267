"""Attention checks: pairs with a known honest answer, mixed into evaluator sessions, and the QC settings.

Two kinds of check pair (``Pair.kind``):
- ``check_same``: a clip against a pixel-identical copy of itself. The honest answer is "indistinguishable"
  (tie) on every criterion. The copy is its own Clip row (variant ``duplicate``) with its own media token
  and a freshly written file (``duplicate_gif``: new colour orders, the same layout and length), so the page
  shows two different opaque URLs, two different ETags and two different files of one size exactly as for a
  normal pair; pointing both sides at one URL, or serving the same bytes twice, would give the check away to
  anyone reading the page source or the network tab.
- ``check_degraded``: a clip (``clip_a``) against a visibly degraded copy (``clip_b``, variant ``frozen`` /
  ``noise`` / ``scrambled``, made by ``app.media.degrade``). The original must win the criteria the
  degradation obviously hurts (``EXPECTED_WINS``) and overall quality.

Copies are made ahead of time (``ensure_attention_pairs``), never while an evaluator waits, so a check is
served exactly like any other pair: same routes, same markup, same timing. Copies have ``origin =
'degraded'`` and keep the source's model, prompt and seed; everything that counts real clips or builds
real pairs filters them out with ``Clip.origin != 'degraded'``. Check votes are graded here and never
enter the results (the vote frame only reads ``Pair.kind == 'normal'``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Integer, Select, bindparam, case, func, or_, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import after_commit, session_scope, snapshot_session_scope
from app.media.budget import check_gif_budget
from app.media.degrade import applicable_variants, degrade_gif, duplicate_gif
from app.media.storage import StorageError, delete_media, read_bytes, store_bytes
from app.media.video import FORMATS as VIDEO_FORMATS
from app.media.video import check_video_budget, degrade_video, duplicate_video, sniff, video_variants
from app.models import Assignment, Clip, Criterion, Pair, Study, Vote, VoteChoice
from app.raw_sql import RawStatement

CHECK_SAME = "check_same"
CHECK_DEGRADED = "check_degraded"
CHECK_KINDS = (CHECK_SAME, CHECK_DEGRADED)
DEGRADED_ORIGIN = "degraded"
DUPLICATE_VARIANT = "duplicate"

# Which criteria a degraded copy must lose. Freezing or scrambling frames leaves each frame's appearance
# intact (a frozen frame is not "distorted"), so those checks ask about motion instead; noise ruins the
# appearance. Overall quality must always go to the original.
EXPECTED_WINS: dict[str, tuple[str, ...]] = {
    "noise": ("appearance_distortion", "overall_quality"),
    "frozen": ("motion_amplitude", "overall_quality"),
    "scrambled": ("motion_naturalness", "overall_quality"),
}
VARIANT_WORDS = {
    "noise": "a copy covered in heavy noise",
    "frozen": "a frozen copy (its first frame repeated)",
    "scrambled": "a copy with its frames shuffled",
}


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class QCSettings:
    """Quality-control settings of one study. ``Study.qc`` stores only what differs from these defaults."""

    enabled: bool = True
    # The share of a session's pairs that are attention checks, with at least min_checks_per_session of them
    # (check_plan: spread over the session, never the first pair).
    attention_rate: float = 0.1
    min_checks_per_session: int = 2
    # The most of a session's pairs that checks may take, extra checks for a suspicious session included (the
    # share of the rater's time the study states); never below attention_rate.
    max_check_share: float = 0.3
    # A vote submitted sooner is "too fast": no time to watch the pair (a 16-frame clip at 8 fps plays 2 s) and
    # answer. 3 s, not the 4 s it was: brisk experts answer a quarter of their votes in 3-5 s, and at 4 s the
    # rule flagged 13.6 % of them (issue 21; bench/qc.py).
    min_seconds_per_vote: float = 3.0
    max_too_fast_share: float = 0.2  # flag when more than this share of an evaluator's votes is too fast
    max_failed_checks: int = 1  # flag when more checks than this are failed
    straightline_min_votes: int = 8  # straight-lining is judged only from this many votes on
    straightline_share: float = 0.9  # flag when one side (left or right) takes at least this share of answers
    max_pairs_per_session: int | None = None  # None: the study's pairs_per_session
    sessions_per_invite: int | None = None  # None: the study's sessions_per_invite (0 = unlimited)
    join_rate_limit_per_minute: int | None = None  # None: BLINDPAIR_JOIN_RATE_LIMIT_PER_MINUTE
    # Sessions one address (its keyed hash) may start in this study; 0 = unlimited. A lab whose participants
    # share one network raises it. Two, not one: a participant who lost the cookie can start again once.
    sessions_per_address: int = 2
    # An open pair left unanswered this long goes back to the pool (0 = never): other evaluators get it, and
    # the late answer is refused, so no pair is counted twice.
    abandon_after_minutes: int = 30
    # Flag the sessions of one address when, together, they lean to one model far more than the study's other
    # sessions (two-sided test at this level, Bonferroni across criteria; 0 = off). See app/trust/collusion.py.
    cluster_check_alpha: float = 0.001
    # Flag a rater whose answers agree with the other raters' consensus significantly less than an honest
    # rater's would (one-sided test at this level; 0 = off), judged from this many votes on. See
    # app/trust/reliability.py.
    reliability_alpha: float = 0.001
    reliability_min_votes: int = 5
    # How the next pair is chosen (app/services/assignments.py): least-voted first, or with 3+ models
    # "adaptive" (optimal design for every rating's interval) or "arena_eq9" (Chatbot Arena's Eq. 9), both in
    # app/stats/adaptive.py. Lives here because the rating flow reads these settings on every pair page already.
    pair_selection: str = "least_voted"

    # The limits as qc_settings() resolves them from the study row (the stored overrides may leave them None).
    @property
    def pairs_quota(self) -> int:
        return _resolved(self.max_pairs_per_session, "max_pairs_per_session")

    @property
    def session_limit(self) -> int:
        """Sessions per invite; 0 = unlimited."""
        return _resolved(self.sessions_per_invite, "sessions_per_invite")


def _resolved(value: int | None, name: str) -> int:
    if value is None:
        raise ValueError(f"QC setting {name} is unresolved: read the settings through qc_settings(study)")
    return value


_BOUNDS: dict[str, tuple[float, float]] = {
    "attention_rate": (0.0, 0.5),
    "min_checks_per_session": (0, 100),
    "max_check_share": (0.0, 0.5),
    "reliability_alpha": (0.0, 0.1),
    "reliability_min_votes": (1, 100000),
    "min_seconds_per_vote": (0.0, 600.0),
    "max_too_fast_share": (0.0, 1.0),
    "max_failed_checks": (0, 1000),
    "straightline_min_votes": (1, 100000),
    "straightline_share": (0.5, 1.0),
    "max_pairs_per_session": (1, 100000),
    "sessions_per_invite": (0, 10**9),
    "join_rate_limit_per_minute": (1, 100000),
    "sessions_per_address": (0, 100000),
    "abandon_after_minutes": (0, 7 * 24 * 60),
    "cluster_check_alpha": (0.0, 0.1),
}
PAIR_SELECTIONS = ("least_voted", "adaptive", "arena_eq9")
# Older spelling used by the vote service before this module existed.
_ALIASES = {"min_vote_seconds": "min_seconds_per_vote"}


class QCSettingsError(ValueError):
    """Bad QC settings; ``errors`` lists every problem, one sentence each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def validate_qc(data: dict[str, Any] | None) -> dict[str, Any]:
    """Check a QC settings dict (e.g. from a study form or the API); return it cleaned, or raise QCSettingsError."""
    known = {f.name: f for f in fields(QCSettings)}
    clean: dict[str, Any] = {}
    errors: list[str] = []
    for raw_key, value in (data or {}).items():
        key = _ALIASES.get(raw_key, raw_key)
        if key not in known:
            errors.append(f"unknown QC setting {raw_key!r}; known settings: {', '.join(known)}")
            continue
        if value is None and key in ("max_pairs_per_session", "sessions_per_invite", "join_rate_limit_per_minute"):
            clean[key] = None
            continue
        if key == "pair_selection":
            if value not in PAIR_SELECTIONS:
                errors.append(f"pair_selection must be one of {', '.join(PAIR_SELECTIONS)}, got {repr(value)[:60]}")
            else:
                clean[key] = value
            continue
        if key == "enabled":
            if not isinstance(value, bool):
                errors.append("enabled must be true or false")
            else:
                clean[key] = value
            continue
        want_int = known[key].type in ("int", "int | None")
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(value) if want_int else float(value)
            if want_int and float(value) != number:
                raise ValueError
        except (TypeError, ValueError):
            errors.append(f"{key} must be {'a whole number' if want_int else 'a number'}, got {value!r}")
            continue
        lo, hi = _BOUNDS[key]
        if not (lo <= number <= hi) or (isinstance(number, float) and math.isnan(number)):
            errors.append(f"{key} must be between {lo:g} and {hi:g}, got {number:g}")
            continue
        clean[key] = number
    if errors:
        raise QCSettingsError(errors)
    return clean


def qc_settings(study: Study) -> QCSettings:
    """The study's QC settings: defaults overridden by ``Study.qc``, the limits filled from the study row."""
    return qc_settings_for(study.qc, pairs_per_session=study.pairs_per_session,
                           sessions_per_invite=study.sessions_per_invite)


def qc_settings_for(stored_qc: dict[str, Any] | None, *, pairs_per_session: int,
                    sessions_per_invite: int | None) -> QCSettings:
    """``qc_settings`` from the study's columns (the vote path reads them without loading a Study).

    Invalid stored values (written around ``validate_qc``) fall back to the defaults rather than breaking
    every evaluator page of the study.
    """
    key = json.dumps(stored_qc or {}, sort_keys=True, default=str)
    return _qc_settings(key, pairs_per_session, sessions_per_invite, get_settings().join_rate_limit_per_minute)


@lru_cache(maxsize=256)
def _qc_settings(stored_json: str, pairs_per_session: int, sessions_per_invite: int | None,
                 default_join_rate: int) -> QCSettings:
    # Cached: validating the stored settings on every request was measurable on the vote path, and the
    # result is a pure function of these arguments (QCSettings is frozen).
    stored = {}
    for key, value in json.loads(stored_json).items():
        try:
            stored.update(validate_qc({key: value}))
        except QCSettingsError:
            continue
    base = QCSettings(**stored)
    return QCSettings(**{
        **asdict(base),
        "max_pairs_per_session": base.max_pairs_per_session or pairs_per_session,
        "sessions_per_invite": (base.sessions_per_invite if base.sessions_per_invite is not None
                                else sessions_per_invite or 0),
        "join_rate_limit_per_minute": base.join_rate_limit_per_minute or default_join_rate,
    })


def is_too_fast(time_spent_ms: int, settings: QCSettings) -> bool:
    return time_spent_ms < settings.min_seconds_per_vote * 1000


# ------------------------------------------------------------------------------------------ making pairs


def _target_sources(study: Study, settings: QCSettings) -> int:
    # Each source yields one check of each kind, and a session never gets two checks from one source, so the
    # pool must hold the most checks one session can get (extra ones included) with room to spare: the checks
    # of a session go to prompts it has not seen (pick_check_pair), and with a pool barely larger than a
    # session's checks the normal pairs shown before a check had often used up the pool's prompts, so the
    # check repeated a clip the rater had just seen (bench/qc.py counts those sessions).
    _base, ceiling = checks_per_session(settings.max_pairs_per_session or study.pairs_per_session, settings)
    return max(3, 2 * ceiling + 2)


def _store_copy(source: Clip, data: bytes, variant: str) -> Clip:
    stored = store_bytes(data, suffix="." + (sniff(data) or "gif"))
    return Clip(
        study_id=source.study_id, model_id=source.model_id, prompt_id=source.prompt_id, seed=source.seed,
        origin=DEGRADED_ORIGIN, source_clip_id=source.id, variant=variant, status="done",
        storage_name=stored.storage_name, storage=stored.store, sha256=stored.sha256, size_bytes=stored.size_bytes,
        width=source.width, height=source.height, frames=source.frames, fps=source.fps,
    )


def _ensure_pair(session: Session, *, source: Clip, copy: Clip, kind: str) -> int:
    exists = session.scalar(select(Pair.id).where(Pair.clip_a_id == source.id, Pair.clip_b_id == copy.id))
    if exists:
        return 0
    session.add(Pair(study_id=source.study_id, prompt_id=source.prompt_id, clip_a_id=source.id,
                     clip_b_id=copy.id, kind=kind))
    return 1


def ensure_attention_pairs(session: Session, *, study_id: int, rng: random.Random | None = None,
                           n_sources: int | None = None) -> int:
    """Make sure the study has attention-check pairs; return how many pairs were created (0 when complete).

    Picks up to ``n_sources`` done real clips at random (default: enough for the study's check rate and
    session size) and gives each a duplicate (``check_same``) and a degraded copy (``check_degraded``),
    balancing the degradation variants. Idempotent: existing copies are reused, missing pairs repaired.
    Reads the source files from media storage, so call it after clips are imported or generated, e.g.
    when a study is opened; it never runs while an evaluator waits.
    """
    rng = rng or random.SystemRandom()
    study = session.get(Study, study_id)
    if study is None:
        raise ValueError(f"study {study_id} does not exist")
    settings = qc_settings(study)
    if not settings.enabled or settings.attention_rate <= 0:
        return 0
    target = n_sources if n_sources is not None else _target_sources(study, settings)

    copies = session.scalars(
        select(Clip).where(Clip.study_id == study_id, Clip.origin == DEGRADED_ORIGIN).order_by(Clip.id)
    ).all()
    by_source: dict[int, dict[str, Clip]] = {}
    for copy in copies:
        if copy.source_clip_id is not None:  # a copy whose source was deleted goes with it (ON DELETE CASCADE)
            by_source.setdefault(copy.source_clip_id, {})[copy.variant] = copy
    variant_use = Counter(c.variant for c in copies if c.variant != DUPLICATE_VARIANT)
    if len(by_source) >= target and _all_paired(session, study_id, by_source):
        # Complete: the usual case once a study has its checks. The worker calls this after every clip, and
        # the full pass re-read every source clip's file and every done clip's row (about 20 ms per clip,
        # growing with the study: bench/generation.py).
        return 0

    candidates = session.scalars(
        select(Clip).where(Clip.study_id == study_id, Clip.status == "done", Clip.origin != DEGRADED_ORIGIN,
                           Clip.variant == "", Clip.storage_name.is_not(None)).order_by(Clip.id)
    ).all()
    sources = [c for c in candidates if c.id in by_source]
    fresh = [c for c in candidates if c.id not in by_source]
    rng.shuffle(fresh)
    # Sources on prompts the pool does not cover yet first: a session takes one check per prompt it has not
    # seen, so the pool's prompts, not its clips, are what a session can run out of.
    covered = {c.prompt_id for c in sources}
    first_of_prompt: list[Clip] = []
    rest: list[Clip] = []
    for clip in fresh:
        (rest if clip.prompt_id in covered else first_of_prompt).append(clip)
        covered.add(clip.prompt_id)
    fresh = first_of_prompt + rest

    created = 0
    for source in sources + fresh:
        have = by_source.get(source.id, {})
        if source.id not in by_source and len(by_source) >= target:
            break
        if source.storage_name is None:  # excluded by the query
            continue
        try:
            data = read_bytes(source.storage_name, source.storage)
            # Copies decode every frame: a clip over the pixel budget (one imported before the budget existed)
            # is skipped, never decoded (GifBudgetError, VideoBudgetError are ValueErrors).
            fmt = sniff(data) or "gif"
            if fmt in VIDEO_FORMATS:
                check_video_budget(data)
            else:
                check_gif_budget(data)
        except (OSError, ValueError, StorageError):
            continue  # a missing file is reported by the media checks, not here; pick another clip
        duplicate = have.get(DUPLICATE_VARIANT)
        try:
            # Both copies come from the canonical writer, as every stored clip does (app/media/canonical.py):
            # the same layout and colour tables as the clips they sit beside, so their bytes name no check.
            if duplicate is not None:
                duplicate_data = b""
            else:  # a video copy is encoded with the same settings as every clip (app/media/video.py)
                duplicate_data = duplicate_video(data, fmt) if fmt in VIDEO_FORMATS else duplicate_gif(data)
        except ValueError:
            continue  # a clip stored before the canonical writer that it cannot copy exactly: pick another
        degraded = next((c for v, c in have.items() if v != DUPLICATE_VARIANT), None)
        if degraded is None:
            try:
                options = video_variants(data) if fmt in VIDEO_FORMATS else applicable_variants(data)
            except ValueError:
                continue  # not an animated GIF: not usable for a check
            least = min(variant_use[v] for v in options)
            variant = rng.choice([v for v in options if variant_use[v] == least])
            copy_data = (degrade_video(data, fmt, variant, rng) if fmt in VIDEO_FORMATS
                         else degrade_gif(data, variant, rng=rng))
            degraded = _store_copy(source, copy_data, variant)
            session.add(degraded)
            variant_use[variant] += 1
        if duplicate is None:
            duplicate = _store_copy(source, duplicate_data, DUPLICATE_VARIANT)
            session.add(duplicate)
        session.flush()
        by_source[source.id] = {degraded.variant: degraded, DUPLICATE_VARIANT: duplicate}
        created += _ensure_pair(session, source=source, copy=duplicate, kind=CHECK_SAME)
        created += _ensure_pair(session, source=source, copy=degraded, kind=CHECK_DEGRADED)
    session.flush()
    return created


def _all_paired(session: Session, study_id: int, by_source: dict[int, dict[str, Clip]]) -> bool:
    """Every source has a duplicate and a degraded copy, each already paired with it."""
    paired = set(session.execute(
        select(Pair.clip_a_id, Pair.clip_b_id).where(Pair.study_id == study_id, Pair.kind.in_(CHECK_KINDS))
    ).tuples())
    return all(
        DUPLICATE_VARIANT in copies and len(copies) >= 2
        and all((source_id, copy.id) in paired for copy in copies.values())
        for source_id, copies in by_source.items()
    )


def schedule_attention_checks(session: Session, *, study_id: int) -> None:
    """Make the study's missing attention checks once ``session`` commits, their file work outside its
    transaction (``make_attention_checks``): where a change makes checks necessary (a study opened, QC switched
    on, clips imported or generated)."""
    after_commit(session, lambda: make_attention_checks(study_id=study_id))


def make_attention_checks(*, study_id: int, rng: random.Random | None = None, n_sources: int | None = None) -> int:
    """``ensure_attention_pairs`` with its slow part (reading, decoding, degrading, encoding and storing the
    copies: seconds per clip) outside any write transaction; returns the pairs created.

    On SQLite the write lock is held from a write transaction's first statement to its commit, so making the
    copies inside one stalled every vote and login for as long. Here ``ensure_attention_pairs`` first runs on
    a snapshot with its flushes held back: it picks the sources and writes the copies' files, and its new rows
    stay in memory. A short write transaction then adds those rows, except where another process made a copy
    of the same kind meanwhile (its file is removed), and pairs them (``ensure_attention_pairs`` again, which
    now finds every copy it needs and only pairs).
    """
    rng = rng or random.SystemRandom()
    with snapshot_session_scope() as reader:
        reader.flush = _held_back  # type: ignore[method-assign]  # no row reaches the database from here
        ensure_attention_pairs(reader, study_id=study_id, rng=rng, n_sources=n_sources)
        made = [obj for obj in reader.new if isinstance(obj, Clip) and obj.origin == DEGRADED_ORIGIN]
        reader.expunge_all()
    unused = [(c.storage_name, c.storage) for c in made if c.storage_name]
    try:
        with session_scope() as session:
            have = {(c.source_clip_id, c.variant == DUPLICATE_VARIANT) for c in session.scalars(
                select(Clip).where(Clip.study_id == study_id, Clip.origin == DEGRADED_ORIGIN))}
            sources = set(session.scalars(select(Clip.id).where(
                Clip.id.in_([c.source_clip_id for c in made]), Clip.status == "done")))
            for copy in made:
                kind = (copy.source_clip_id, copy.variant == DUPLICATE_VARIANT)
                if copy.source_clip_id in sources and kind not in have:
                    session.add(copy)
                    have.add(kind)
                    if copy.storage_name and (copy.storage_name, copy.storage) in unused:
                        unused.remove((copy.storage_name, copy.storage))
            session.flush()
            created = ensure_attention_pairs(session, study_id=study_id, rng=rng, n_sources=n_sources)
    except BaseException:
        unused = [(c.storage_name, c.storage) for c in made if c.storage_name]
        raise
    finally:
        for name, store in unused:
            try:
                delete_media(name, store)
            except (OSError, ValueError, StorageError):
                continue  # left for the orphan sweep (app/services/storage.py)
    return created


def _held_back(*_args: object, **_kwargs: object) -> None:
    """A session's flush that writes nothing (``make_attention_checks``' dry run)."""


# -------------------------------------------------------------------------------------- serving checks


@dataclass(frozen=True)
class CheckPlan:
    """Where a session's attention checks go.

    ``base``: the positions (1-based pair numbers) of the checks every session gets, one in each of
    ``len(base)`` equal stretches of pairs 2..quota, so they are spread and never first. ``extra``: positions
    from which one more check is owed while the session's answers look suspicious (``suspicion``), all after
    the first base check. Checks due at a position but not served (the pool had none left for this rater, or a
    check was given back unanswered) stay owed and come at the next pair.
    """

    base: tuple[int, ...]
    extra: tuple[int, ...]

    def base_due(self, position: int) -> int:
        return sum(1 for p in self.base if p <= position)

    def extra_due(self, position: int) -> int:
        return sum(1 for p in self.extra if p <= position)


def checks_per_session(quota: int, settings: QCSettings) -> tuple[int, int]:
    """(checks every session gets, the most it may get with extra ones) for a session of ``quota`` pairs.

    The ceiling is the stated share of the rater's time, ``max_check_share`` (or ``attention_rate`` when that
    is higher) of the pairs, and never the first pair; within it every session gets ``attention_rate`` of its
    pairs and at least ``min_checks_per_session``. A session too short for the minimum within the share gets
    what fits (a 3-pair session at the default 30 %: none; 7 pairs hold the default two).
    """
    if not settings.enabled or quota < 2 or settings.attention_rate <= 0:
        return 0, 0
    ceiling = min(quota - 1, math.floor(max(settings.max_check_share, settings.attention_rate) * quota + 1e-9))
    base = min(ceiling, max(settings.min_checks_per_session, round(settings.attention_rate * quota)))
    return base, ceiling


def check_plan(quota: int, settings: QCSettings, rng: random.Random) -> CheckPlan:
    """Draw a session's ``CheckPlan`` (the caller seeds ``rng`` so that one session always gets the same)."""
    base_n, ceiling = checks_per_session(quota, settings)
    if base_n == 0:
        return CheckPlan((), ())
    slots = list(range(2, quota + 1))
    base = []
    for i in range(base_n):  # one check in each of base_n equal stretches of the session
        stretch = slots[i * len(slots) // base_n:(i + 1) * len(slots) // base_n]
        base.append(rng.choice(stretch))
    # Extra checks after the last base check where there is room (a suspicion has had both base checks to
    # show itself), else anywhere after the first one.
    later = [p for p in slots if p > base[-1]]
    if len(later) < ceiling - base_n:
        later = [p for p in slots if p > base[0] and p not in base]
    extra = sorted(rng.sample(later, min(ceiling - base_n, len(later))))
    return CheckPlan(tuple(base), tuple(extra))


def session_check_plan(evaluator_id: int, quota: int, settings: QCSettings) -> CheckPlan:
    """This session's plan, the same on every request: drawn from a generator seeded by a keyed hash of the
    session, so the positions are fixed for the session yet nobody without the server's secret can work them
    out (the evaluator's ids are no secret)."""
    return _drawn_plan(get_settings().secret_key, evaluator_id, quota, settings)


# Kept once drawn: every pair page from a session's first check position on asks for its plan, and seeding a
# generator and drawing cost a few percent of a vote's CPU. The plan is a function of these arguments alone.
@lru_cache(maxsize=4096)
def _drawn_plan(secret_key: str, evaluator_id: int, quota: int, settings: QCSettings) -> CheckPlan:
    seed = hmac.new(secret_key.encode(), f"attention-checks:{evaluator_id}".encode(), hashlib.sha256).digest()
    return check_plan(quota, settings, random.Random(int.from_bytes(seed[:8], "big")))


def suspicion(answers: AnswerSummary, settings: QCSettings) -> str | None:
    """Whether a session's answers so far look careless, and which kind of check would tell: the check kind
    (CHECK_SAME or CHECK_DEGRADED), "any", or ``None`` when nothing looks wrong.

    Cheap signals, each well short of a flag: a failed check (another of that kind settles it: a careful
    rater who slipped passes it); on the real pairs, mostly "indistinguishable" (a degraded check tells a
    rater who cannot see differences from one who does not look) or mostly one side of the screen (a
    same-clip check tells); too many quick votes.
    """
    for v in answers.checks:
        if grade_check(v.pair, v.choices, v.left_clip_id):
            return v.pair.kind
    real = answers.real_sides
    if real.votes >= SUSPICIOUS_MIN_VOTES and real.answers:
        if real.tie / real.answers >= SUSPICIOUS_SHARE:
            return CHECK_DEGRADED
        if max(real.left, real.right) / real.answers >= SUSPICIOUS_SHARE:
            return CHECK_SAME
    fast = sum(1 for t in answers.votes if is_too_fast(t.time_spent_ms, settings))
    if answers.votes and fast / len(answers.votes) > settings.max_too_fast_share:
        return "any"
    return None


# A share of one answer on a session's real pairs, from this many of them, that earns it an extra check (not a
# flag). An honest rater of a clear winner leans to one side by chance in a short session (the sides are
# counterbalanced, but over 4-8 pairs): at 0.7 from 3 pairs most honest sessions drew an extra check in the
# bench (bench/qc.py); at 0.8 from 4 few do, and every careless kind still fails a base check first.
SUSPICIOUS_SHARE = 0.8
SUSPICIOUS_MIN_VOTES = 4


def _build_check_candidates() -> Select[Any]:
    evaluator_id = bindparam("evaluator_id", type_=Integer)
    pairs, assignments = Pair.__table__, Assignment.__table__
    seen_pairs = select(assignments.c.pair_id).where(assignments.c.evaluator_id == evaluator_id)
    # Real pairs also have clip_a = a source clip, but seeing a clip in a real pair must not rule it out.
    had = pairs.alias("had")
    seen_sources = (
        select(had.c.clip_a_id).join(assignments, assignments.c.pair_id == had.c.id)
        .where(assignments.c.evaluator_id == evaluator_id, or_(*(had.c.kind == k for k in CHECK_KINDS)))
    )
    shown = pairs.alias("shown")
    seen_prompts = (
        select(shown.c.prompt_id).join(assignments, assignments.c.pair_id == shown.c.id)
        .where(assignments.c.evaluator_id == evaluator_id)
    )
    return select(pairs.c.id, pairs.c.kind, pairs.c.assigned_count,
                  pairs.c.prompt_id.in_(seen_prompts).label("prompt_seen")).where(
        pairs.c.study_id == bindparam("study_id"), or_(*(pairs.c.kind == k for k in CHECK_KINDS)),
        pairs.c.id.not_in(seen_pairs),
        pairs.c.clip_a_id.not_in(seen_sources),
    )


# Built once, on the tables: it runs on about one page in ten (see app/services/assignments.py). The kinds are
# compared one by one, not with IN: an IN list's SQL is rendered per run, which app/raw_sql.py cannot do.
_CHECK_CANDIDATES = RawStatement(_build_check_candidates())


def pick_check_pair(session: Session, *, evaluator_id: int, study_id: int, rng: random.Random,
                    prefer_kind: str | None = None) -> int | None:
    """A check pair (its id) this evaluator has not had, whose source clip was in none of their earlier checks.

    Checks on prompts the evaluator has not seen yet go first, then checks of ``prefer_kind``, then the
    least-shown pairs, ties broken at random. ``None`` when the pool is used up (then the caller serves a
    normal pair, and the check stays owed).
    """
    rows = _CHECK_CANDIDATES.all(session, {"evaluator_id": evaluator_id, "study_id": study_id})
    if not rows:
        return None
    # A check repeats a prompt, and the very clip URL, of a normal pair; shown after that pair, the repeat
    # gives the check away. Prefer checks on prompts this evaluator has not seen (fall back when none is left).
    rows = [r for r in rows if not r.prompt_seen] or rows
    rows = [r for r in rows if r.kind == prefer_kind] or rows
    least = min(r.assigned_count for r in rows)
    # The id, not the row: loading it through the ORM cost as much as choosing it, and the caller needs the id.
    return int(rng.choice(sorted(r.id for r in rows if r.assigned_count == least)))


_as_t, _pairs_t = Assignment.__table__, Pair.__table__
# The kinds of the checks this session has had, given back ones left out (a check left unanswered is owed again).
_CHECKS_HAD = RawStatement(
    select(_pairs_t.c.kind).join(_as_t, _as_t.c.pair_id == _pairs_t.c.id)
    .where(_as_t.c.evaluator_id == bindparam("evaluator_id"), _pairs_t.c.kind != "normal",
           _as_t.c.status != "released")
    .order_by(_as_t.c.position)
)


def due_check_pair(session: Session, *, evaluator_id: int, study_id: int, quota: int, position: int,
                   settings: QCSettings, rng: random.Random) -> int | None:
    """The attention check (its pair's id) to serve at ``position`` of this session, or ``None`` for a normal pair.

    Follows the session's ``CheckPlan``: a base check is served once its position is reached (later when the
    pool had none for this rater then), the first two of different kinds; an extra check once its position is
    reached while ``suspicion`` finds the answers so far suspicious, of the kind that would tell.
    """
    plan = session_check_plan(evaluator_id, quota, settings)
    base_due = plan.base_due(position)
    if base_due == 0:  # before the first check (no query on these pages)
        return None
    had = _CHECKS_HAD.scalars(session, {"evaluator_id": evaluator_id})
    prefer: str | None = None
    if len(had) < base_due:
        missing = [k for k in CHECK_KINDS if k not in had]
        prefer = missing[0] if len(missing) == 1 else None  # one of each kind before a second of either
    elif plan.extra_due(position) > len(had) - base_due:
        found = suspicion(answer_summary(session, evaluator_id=evaluator_id), settings)
        if found is None:
            return None
        prefer = found if found in CHECK_KINDS else None
    else:
        return None
    return pick_check_pair(session, evaluator_id=evaluator_id, study_id=study_id, rng=rng, prefer_kind=prefer)


# ------------------------------------------------------------------------------------------------ grading


def _words(key: str) -> str:
    return key.replace("_", " ")


@dataclass(frozen=True)
class CheckPair:
    """What grading needs of an attention-check pair: its kind, its original clip and the copy's variant."""

    id: int
    kind: str
    clip_a_id: int
    variant: str

    @classmethod
    def of(cls, pair: Pair) -> CheckPair:
        return cls(pair.id, pair.kind, pair.clip_a_id, pair.clip_b.variant if pair.clip_b is not None else "")


def grade_check(pair: Pair | CheckPair, choices_by_criterion_key: dict[str, str], left_clip_id: int) -> list[str]:
    """Why this answer to an attention check fails, in words; an empty list means it passed.

    ``choices_by_criterion_key`` maps criterion keys to 'left' / 'right' / 'tie' as clicked, and
    ``left_clip_id`` is the clip that was shown on the left (``Assignment.left_clip_id``).
    """
    if isinstance(pair, Pair):
        pair = CheckPair.of(pair)
    choices = dict(choices_by_criterion_key)
    if pair.kind == CHECK_SAME:
        # "Both are bad" (where a study offers it) prefers neither side either: an honest answer here too.
        not_tie = [k for k, side in choices.items() if side not in ("tie", "both_bad")]
        if not not_tie:
            return []
        return [f"attention check (the same clip twice): did not answer 'indistinguishable' for "
                f"{len(not_tie)} of {len(choices)} criteria ({', '.join(_words(k) for k in not_tie)})"]
    if pair.kind != CHECK_DEGRADED:
        return []
    original_side = "left" if left_clip_id == pair.clip_a_id else "right"
    variant = pair.variant or ""
    what = VARIANT_WORDS.get(variant, "a degraded copy")
    expected = [k for k in EXPECTED_WINS.get(variant, ("overall_quality",)) if k in choices]
    if expected:
        lost = [k for k in expected if choices[k] != original_side]
        if not lost:
            return []
        return [f"attention check (a clip against {what}): did not prefer the original for "
                f"{', '.join(_words(k) for k in lost)}"]
    # A study with its own criteria list: the original must win more criteria than the damaged copy.
    wins = sum(1 for side in choices.values() if side == original_side)
    losses = sum(1 for side in choices.values() if side not in (original_side, "tie"))
    if wins > losses:
        return []
    return [f"attention check (a clip against {what}): preferred the copy as often as the original "
            f"({losses} to {wins} criteria)"]


@dataclass(frozen=True)
class AnsweredVote:
    """One of an evaluator's votes read in full: timing, the pair's kind and what was clicked (QC reads the
    attention checks so, and counts the other votes: ``AnswerSummary``)."""

    id: int
    time_spent_ms: int
    too_fast: bool
    pair: CheckPair
    left_clip_id: int
    choices: dict[str, str]  # criterion key -> left | right | tie, as clicked


_v, _a, _p, _vc, _c = (Vote.__table__, Assignment.__table__, Pair.__table__, VoteChoice.__table__,
                       Criterion.__table__)
_copy = Clip.__table__.alias("copy")
# Built once, on the tables (the vote path runs its checks-only form after every vote of a session that has had a
# check; see app/services/assignments.py).
_ANSWERED_SELECT = (
    select(_v.c.id, _v.c.time_spent_ms, _v.c.too_fast, _p.c.id, _p.c.kind, _p.c.clip_a_id, _copy.c.variant,
           _a.c.left_clip_id, _c.c.key, _vc.c.side)
    .select_from(_v)
    .join(_a, _a.c.id == _v.c.assignment_id)
    .join(_p, _p.c.id == _v.c.pair_id)
    .join(_copy, _copy.c.id == _p.c.clip_b_id)
    .outerjoin(_vc, _vc.c.vote_id == _v.c.id)
    .outerjoin(_c, _c.c.id == _vc.c.criterion_id)
    .where(_v.c.evaluator_id == bindparam("evaluator_id"))
    .order_by(_v.c.id)
)
_ANSWERED = RawStatement(_ANSWERED_SELECT)


def answered_votes(session: Session, *, evaluator_id: int) -> list[AnsweredVote]:
    """Every vote of this evaluator with its choices, in one query."""
    return _answered(_ANSWERED, session, evaluator_id)


def _answered(statement: RawStatement, session: Session, evaluator_id: int) -> list[AnsweredVote]:
    votes: dict[int, AnsweredVote] = {}
    for vote_id, spent, fast, pair_id, kind, clip_a_id, variant, left_clip_id, key, side in statement.all(
        session, {"evaluator_id": evaluator_id}, named=False
    ):
        vote = votes.get(vote_id)
        if vote is None:
            pair = CheckPair(pair_id, kind, clip_a_id, variant or "")
            vote = votes[vote_id] = AnsweredVote(vote_id, spent, bool(fast), pair, left_clip_id, {})
        if key is not None:
            vote.choices[key] = side
    return list(votes.values())


@dataclass(frozen=True)
class VoteTally:
    """One vote counted rather than read: how long it took, the pair's kind, and how its answers fell."""

    time_spent_ms: int
    kind: str
    left: int
    right: int
    tie: int
    answers: int  # every criterion answered, "both are bad" included

    @classmethod
    def of(cls, vote: AnsweredVote) -> VoteTally:
        sides = Counter(vote.choices.values())
        return cls(vote.time_spent_ms, vote.pair.kind, sides["left"], sides["right"], sides["tie"],
                   len(vote.choices))


class SideTotals(NamedTuple):
    votes: int
    left: int
    right: int
    tie: int
    answers: int


@dataclass(frozen=True)
class AnswerSummary:
    """What the per-session QC rules need of one evaluator's answers: every vote counted, and the attention
    checks with what was clicked (only a check is graded criterion by criterion). Both in the order voted."""

    votes: list[VoteTally]
    checks: list[AnsweredVote]

    @property
    def real_sides(self) -> SideTotals:
        """The real pairs' votes and their answers, summed (both the flags and the call for a check judge these)."""
        real = [t for t in self.votes if t.kind not in CHECK_KINDS]
        return SideTotals(len(real), sum(t.left for t in real), sum(t.right for t in real), sum(t.tie for t in real),
                          sum(t.answers for t in real))

    @classmethod
    def of(cls, votes: Sequence[AnsweredVote]) -> AnswerSummary:
        return cls([VoteTally.of(v) for v in votes], [v for v in votes if v.pair.kind in CHECK_KINDS])


def _side_count(side: str) -> Any:
    return func.sum(case((_vc.c.side == side, 1), else_=0))


# QC judges the session after every one of its votes. Reading every answer (_ANSWERED: a row per criterion, six
# per vote) built 120 Python rows by the end of a 20-pair session, the vote's costliest statement on SQLite
# (about 165 us); counted in SQL it is a row per vote, and only the checks, a few a session, are read in full
# (about 115 us for both; scratch timings, 2026-12-08).
_TALLIES = RawStatement(
    select(_v.c.time_spent_ms, _p.c.kind, _side_count("left"), _side_count("right"), _side_count("tie"),
           func.count(_vc.c.id))
    .select_from(_v)
    .join(_p, _p.c.id == _v.c.pair_id)
    .outerjoin(_vc, _vc.c.vote_id == _v.c.id)
    .where(_v.c.evaluator_id == bindparam("evaluator_id"))
    .group_by(_v.c.id, _v.c.time_spent_ms, _p.c.kind)
    .order_by(_v.c.id)
)
_CHECKS_ANSWERED = RawStatement(_ANSWERED_SELECT.where(or_(*(_p.c.kind == k for k in CHECK_KINDS))))


def answer_summary(session: Session, *, evaluator_id: int) -> AnswerSummary:
    """This evaluator's answers as QC judges them: ``AnswerSummary.of(answered_votes(...))``, read cheaper. The
    same as long as a vote's choices have one criterion key each, as a study's keys are unique and a vote answers
    its own study's criteria (answered_votes keeps one choice per key, this counts every choice)."""
    votes = [VoteTally(spent, kind, int(left), int(right), int(tie), int(n))
             for spent, kind, left, right, tie, n in _TALLIES.all(session, {"evaluator_id": evaluator_id},
                                                                   named=False)]
    if not any(t.kind in CHECK_KINDS for t in votes):
        return AnswerSummary(votes, [])
    return AnswerSummary(votes, _answered(_CHECKS_ANSWERED, session, evaluator_id))


def check_votes(session: Session, *, evaluator_id: int) -> list[tuple[CheckPair, dict[str, str], int]]:
    """This evaluator's answered attention checks as (pair, choices by criterion key, left clip id)."""
    return [(v.pair, v.choices, v.left_clip_id) for v in answered_votes(session, evaluator_id=evaluator_id)
            if v.pair.kind in CHECK_KINDS]
