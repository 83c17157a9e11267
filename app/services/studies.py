"""Studies: creation with validation, status changes, and the progress numbers the study page shows."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, case, delete, func, or_, select, true
from sqlalchemy.orm import Session

from app.config import get_settings
from app.criteria import DEFAULT_CRITERIA
from app.models import (
    Assignment,
    Clip,
    Criterion,
    Evaluator,
    Pair,
    Prompt,
    Study,
    StudyCollaborator,
    StudyModel,
    User,
    Vote,
)
from app.services.answers import AnswerOptionsError, validate_answer_options
from app.services.attention import QCSettingsError, qc_settings, schedule_attention_checks, validate_qc
from app.services.plans import freeze_draft
from app.services.prompts import PromptError, PromptSpec, add_prompts, list_themes, load_builtin_suite
from app.services.qc import settle
from worker.presets import (
    DEFAULT_SETTINGS,
    GenerationConfigError,
    get_preset,
    off_card_problem,
    validate_overrides,
    validate_settings,
)

# DEFAULT_SETTINGS (seeds [0], 16 frames, 512x512, 8 fps, epiCRealism, float16) and their validation live
# with the worker's presets, so a study can never hold settings the worker would refuse.
STATUSES = ("draft", "open", "closed")
# Allowed status changes: a study is drafted, opened to evaluators, closed, and may be reopened.
TRANSITIONS = {("draft", "open"), ("open", "closed"), ("closed", "open")}
# Where an evaluator joins; the evaluator router (app/web/evaluator.py) serves this path.
INVITE_PATH = "/join/{token}"
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,59}$")
_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?$")


class StudyError(ValueError):
    """Bad input for a study; ``errors`` lists every problem found, each a sentence saying what to fix."""

    def __init__(self, errors: str | Sequence[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__(" ".join(self.errors))


@dataclass(frozen=True)
class ModelSpec:
    """A model under comparison: a generation preset name plus per-model overrides (steps, guidance, ...)."""

    name: str
    description: str = ""
    preset: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


def slugify(text: str) -> str:
    """ASCII, lower-case, dash-separated; 'Lightning vs AnimateDiff (v2)' -> 'lightning-vs-animatediff-v2'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:60].strip("-") or "study"


def _unique_slug(session: Session, base: str) -> str:
    taken = set(session.scalars(select(Study.slug).where(Study.slug.like(f"{base}%"))))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _criterion_fields(item: Any) -> tuple[str, str, str]:
    if hasattr(item, "key"):
        return item.key, item.label, getattr(item, "description", "")
    if isinstance(item, dict):
        return item.get("key", ""), item.get("label", ""), item.get("description", "")
    key, label, *rest = item
    return key, label, rest[0] if rest else ""


def _sentence(message: str) -> str:
    message = message.strip()
    return message + ("" if message.endswith(".") else ".")


def _validate_settings(given: dict[str, Any] | None, errors: list[str],
                       presets: list[str] | None = None) -> dict[str, Any]:
    """The study's settings with defaults filled in, checked by the worker's own rules (one source of truth).

    ``presets``: the models' presets; the defaults then come from the teacher's family (a Wan study gets 81 frames
    at 832x480, 16 fps) and every model's family checks what it can make (Wan: 4k+1 frames, sizes in 16s)."""
    from app.services.generation import negative_prompt_problems

    errors.extend(_sentence(f"Generation settings: {e}") for e in negative_prompt_problems(given))
    try:
        return validate_settings(given, presets=presets)
    except GenerationConfigError as exc:
        errors.extend(_sentence(f"Generation settings: {e}") for e in exc.errors)
        return {**DEFAULT_SETTINGS, **(given or {})}


def _validate_model_generation(m: ModelSpec, errors: list[str]) -> dict[str, Any]:
    """A known preset (or none: a model whose clips are only imported) and overrides the worker accepts; an
    override that leaves the preset's card only on a model marked as an off-card variant."""
    preset = None
    if (m.preset or "").strip():
        try:
            preset = get_preset(m.preset.strip())
        except GenerationConfigError as exc:
            errors.append(f"Model '{m.name}': " + _sentence(str(exc)))
    if not isinstance(m.overrides, dict):
        errors.append(f"Model '{m.name}': overrides must be a mapping such as {{'steps': 4}}.")
        return {}
    try:
        checked = validate_overrides(m.name, m.overrides)
    except GenerationConfigError as exc:
        errors.extend(_sentence(e) for e in exc.errors)
        return dict(m.overrides)
    problem = off_card_problem(m.name, preset, checked) if preset is not None else None
    if problem:
        errors.append(_sentence(problem[0].upper() + problem[1:]))
    return checked


def _check_storable(errors: list[str], *, name: str, description: str, models: Sequence[ModelSpec],
                    settings: dict[str, Any] | None, criteria: list[tuple[str, str, str]]) -> None:
    """Refuse what SQLite would store but PostgreSQL would not: NUL characters and NaN/Infinity in JSON."""
    texts = [name, description or "", *(m.name or "" for m in models), *(m.description or "" for m in models),
             *(m.preset or "" for m in models), *(str(part) for c in criteria for part in c)]
    if any("\x00" in t for t in texts):
        errors.append("Text fields must not contain NUL characters.")
    for label, value in [("Settings", settings or {}), *((f"Model {m.name!r}'s overrides", m.overrides)
                                                           for m in models)]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            errors.append(f"{label} must be plain JSON values (numbers, text, lists; no NaN or Infinity).")


# The JSON API's bound (app/api/studies.py): the web form and the CLI reach the service without it, and a
# larger number overflowed PostgreSQL's INTEGER column (a 500) where SQLite stored it.
MAX_PER_STUDY_COUNT = 10_000


def _positive_int(value: Any, label: str, errors: list[str]) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PER_STUDY_COUNT:
        errors.append(f"{label} must be a whole number from 1 to {MAX_PER_STUDY_COUNT:,} (got {value!r}).")


def _check_name(name: str, errors: list[str]) -> str:
    name = (name or "").strip()
    if not name:
        errors.append("Give the study a name.")
    elif len(name) > 200:
        errors.append("The study name is too long: keep it under 200 characters.")
    return name


def _check_models(models: list[ModelSpec], errors: list[str]) -> list[dict[str, Any]]:
    """Names present, short and distinct; returns each model's validated generation overrides."""
    if len(models) < 2:
        errors.append("A study compares at least two models: add another model.")
    seen_models: set[str] = set()
    for i, m in enumerate(models, start=1):
        model_name = (m.name or "").strip()
        if not model_name:
            errors.append(f"Model {i} has no name.")
        elif len(model_name) > 100:
            errors.append(f"Model {i}'s name is too long: keep it under 100 characters.")
        elif model_name.lower() in seen_models:
            errors.append(f"Two models are called '{model_name}': give each model its own name.")
        seen_models.add(model_name.lower())
    return [_validate_model_generation(m, errors) for m in models]


def _check_prompts(prompts: list[PromptSpec], errors: list[str]) -> None:
    if not prompts:
        errors.append("A study needs at least one prompt: pick themes from the built-in suite or upload a file.")
    ids = [p.external_id for p in prompts]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        errors.append(f"Prompt ids must be unique; repeated: {', '.join(duplicates[:10])}.")


def _check_criteria(criteria: Iterable[Any], errors: list[str]) -> list[tuple[str, str, str]]:
    crit = [_criterion_fields(c) for c in criteria]
    if not crit:
        errors.append("A study needs at least one criterion.")
    keys = [k for k, _, _ in crit]
    for key, label, _ in crit:
        if not isinstance(key, str) or not _KEY_RE.match(key):
            errors.append(f"Criterion key {key!r} must be lower-case letters, digits and _ (e.g. 'overall_quality').")
        if not (label or "").strip():
            errors.append(f"Criterion '{key}' needs a label.")
    if len(set(keys)) != len(keys):
        errors.append("Criterion keys must be unique.")
    return crit


def _check_redirect_url(redirect_url: str, errors: list[str]) -> str:
    redirect_url = (redirect_url or "").strip()
    if redirect_url:
        parts = urlsplit(redirect_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(redirect_url) > 500:
            errors.append("The redirect URL must be a full http(s):// address (or left empty).")
    return redirect_url


def _check_slug(session: Session, slug: str, errors: list[str]) -> None:
    if not _SLUG_RE.match(slug):
        errors.append("The slug must be lower-case letters, digits and dashes.")
    elif session.scalar(select(Study.id).where(Study.slug == slug)) is not None:
        errors.append(f"The slug '{slug}' is taken by another study.")


def create_study(
    session: Session,
    *,
    name: str,
    models: Sequence[ModelSpec],
    prompts: Sequence[PromptSpec],
    criteria: Iterable[Any] | None = None,
    votes_per_pair: int = 5,
    pairs_per_session: int = 10,
    settings: dict[str, Any] | None = None,
    description: str = "",
    redirect_url: str = "",
    created_by_id: int | None = None,
    slug: str | None = None,
    answers: dict[str, Any] | None = None,
    qc: dict[str, Any] | None = None,
) -> Study:
    """Validate everything first, then create the study with its models, criteria and prompts (status draft).

    ``prompts`` are ``app.services.prompts.PromptSpec``s, checked again by its ``add_prompts`` (ids, CLIP length).
    ``criteria`` are ``CriterionSpec``s, dicts or ``(key, label, description)`` tuples. Raises ``StudyError``
    listing every problem; nothing is written in that case.
    """
    errors: list[str] = []
    name = _check_name(name, errors)
    models = list(models)
    overrides = _check_models(models, errors)
    prompts = list(prompts)
    _check_prompts(prompts, errors)
    crit = _check_criteria(DEFAULT_CRITERIA if criteria is None else criteria, errors)
    _positive_int(votes_per_pair, "Votes per pair", errors)
    _positive_int(pairs_per_session, "Pairs per session", errors)
    merged_settings = _validate_settings(settings, errors, [(m.preset or "").strip() for m in models if m.preset])
    redirect_url = _check_redirect_url(redirect_url, errors)
    options = None
    try:  # optional answers: "both are bad", reason tags, a comment (app/services/answers.py)
        options = validate_answer_options(answers).as_json() if answers else None
    except AnswerOptionsError as exc:
        errors.extend(_sentence(f"Answer options: {e}") for e in exc.errors)
    clean_qc: dict[str, Any] = {}
    try:  # e.g. {"pair_selection": "adaptive"} (app/services/attention.py's QCSettings)
        clean_qc = validate_qc(qc)
    except QCSettingsError as exc:
        errors.extend(_sentence(f"Quality-control settings: {e}") for e in exc.errors)
    if slug is not None:
        _check_slug(session, slug, errors)
    _check_storable(errors, name=name, description=description, models=models, settings=settings, criteria=crit)
    if errors:
        raise StudyError(errors)

    models = [replace(m, overrides=o) for m, o in zip(models, overrides, strict=True)]
    slug = slug or _unique_slug(session, slugify(name))
    try:
        # A savepoint: if the prompts service refuses a prompt after the study rows are flushed, only this
        # study's rows are undone and the caller's transaction stays usable (a form can re-render).
        with session.begin_nested():
            study = _insert_study(
                session, name=name, description=description, models=models, criteria=crit, prompts=prompts,
                votes_per_pair=votes_per_pair, pairs_per_session=pairs_per_session, settings=merged_settings,
                redirect_url=redirect_url, created_by_id=created_by_id, slug=slug, answer_options=options,
                qc=clean_qc,
            )
    except PromptError as exc:
        raise StudyError(exc.errors) from exc
    session.refresh(study)
    return study


def _insert_study(session: Session, *, models: Sequence[ModelSpec], criteria: list[tuple[str, str, str]],
                  prompts: Sequence[PromptSpec], **fields: Any) -> Study:
    study = Study(status="draft", **{**fields, "description": (fields["description"] or "").strip()})
    session.add(study)
    session.flush()
    for position, m in enumerate(models):
        session.add(
            StudyModel(
                study_id=study.id,
                name=m.name.strip(),
                description=(m.description or "").strip(),
                preset=(m.preset or "").strip(),
                overrides=dict(m.overrides),
                position=position,
            )
        )
    for position, (key, label, desc) in enumerate(criteria):
        session.add(Criterion(study_id=study.id, key=key, label=label.strip(), description=desc, position=position))
    session.flush()
    add_prompts(session, study_id=study.id, specs=list(prompts))
    return study


def get_study(session: Session, study_id: int) -> Study | None:
    """The study with this id, or ``None`` (no access check: for the CLI and jobs)."""
    return session.get(Study, study_id)


def _visible_to(user_id: int, is_admin: bool) -> ColumnElement[bool]:
    """Studies a user may see: admins all of them; others those they own or were added to."""
    if is_admin:
        return true()
    shared = select(StudyCollaborator.study_id).where(StudyCollaborator.user_id == user_id)
    return or_(Study.created_by_id == user_id, Study.id.in_(shared))


def get_study_for_user(session: Session, study_id: int, *, user_id: int, is_admin: bool) -> Study | None:
    """The study if this user may see it, else ``None`` (also when it exists but is someone else's)."""
    return session.scalars(select(Study).where(Study.id == study_id, _visible_to(user_id, is_admin))).first()


def list_studies(session: Session, *, user_id: int | None = None, is_admin: bool = False) -> list[Study]:
    """The studies a user may see, newest first; every study when no user is given (the CLI)."""
    query = select(Study).order_by(Study.created_at.desc(), Study.id.desc())
    if user_id is not None:
        query = query.where(_visible_to(user_id, is_admin))
    return list(session.scalars(query))


# --- sharing ------------------------------------------------------------------------------------------------


class SharingNotAllowed(StudyError):
    """The user may see the study but not change who it is shared with (only its owner and admins may)."""


def can_share(study: Study, *, user_id: int, is_admin: bool) -> bool:
    return is_admin or study.created_by_id == user_id


def _check_can_share(study: Study, user_id: int, is_admin: bool) -> None:
    if not can_share(study, user_id=user_id, is_admin=is_admin):
        raise SharingNotAllowed("Only the study's owner or an admin can change who it is shared with.")


def list_collaborators(session: Session, *, study_id: int) -> list[User]:
    """The researchers a study is shared with, by email."""
    return list(session.scalars(
        select(User).join(StudyCollaborator, StudyCollaborator.user_id == User.id)
        .where(StudyCollaborator.study_id == study_id).order_by(User.email)))


def add_collaborator(session: Session, *, study_id: int, email: str, by_user_id: int, by_admin: bool) -> User:
    """Share the study with the account of this email; sharing twice is a no-op. Bad input changes nothing."""
    study = session.get(Study, study_id)
    if study is None:
        raise StudyError(f"There is no study with id {study_id}.")
    _check_can_share(study, by_user_id, by_admin)
    wanted = (email or "").strip().lower()
    if not wanted:
        raise StudyError("Give the email of the account to share the study with.")
    user = session.scalars(select(User).where(User.email == wanted)).first()
    if user is None:
        raise StudyError(f"No account has the email {wanted}. An admin adds accounts (the Users page, or "
                         "`blindpair user add`); then share the study again.")
    if user.id == study.created_by_id:
        raise StudyError(f"{user.email} owns this study already.")
    if session.get(StudyCollaborator, (study.id, user.id)) is None:
        session.add(StudyCollaborator(study_id=study.id, user_id=user.id))
        session.flush()
    return user


def remove_collaborator(session: Session, *, study_id: int, user_id: int, by_user_id: int, by_admin: bool) -> None:
    """Stop sharing the study with this user (their open pages stop working at once); unknown ids are refused."""
    study = session.get(Study, study_id)
    if study is None:
        raise StudyError(f"There is no study with id {study_id}.")
    _check_can_share(study, by_user_id, by_admin)
    if session.get(StudyCollaborator, (study.id, user_id)) is None:
        raise StudyError(f"The study is not shared with user {user_id}: nothing to remove.")
    session.execute(delete(StudyCollaborator).where(StudyCollaborator.study_id == study.id,
                                                    StudyCollaborator.user_id == user_id))


def set_status(session: Session, *, study_id: int, status: str) -> Study:
    """Move a study draft -> open -> closed (closed -> open reopens). Setting the current status is a no-op."""
    study = session.get(Study, study_id)
    if study is None:
        raise StudyError(f"There is no study with id {study_id}.")
    if status not in STATUSES:
        raise StudyError(f"Unknown status '{status}': use one of {', '.join(STATUSES)}.")
    if status == study.status:
        return study
    if (study.status, status) not in TRANSITIONS:
        raise StudyError(f"A {study.status} study cannot be set to {status}.")
    study.status = status
    session.flush()
    if status == "open":
        # The pre-registered question is frozen before the first vote can arrive (app/services/plans.py).
        freeze_draft(session, study_id=study.id)
        # Checks for clips that arrived before opening; later clips add theirs as they are imported or made.
        # Made once this commits, their file work outside the transaction (make_attention_checks).
        schedule_attention_checks(session, study_id=study.id)
    return study


def set_qc(session: Session, *, study_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Change a study's quality-control settings; re-judge its evaluators; return the effective settings.

    ``changes`` holds only the settings to change (see ``app.services.attention.QCSettings``); a value of
    None for a limit means "use the study's own". Bad input raises StudyError and changes nothing.
    """
    from dataclasses import asdict

    from app.services.qc import refresh_study_flags

    study = session.get(Study, study_id)
    if study is None:
        raise StudyError(f"There is no study with id {study_id}.")
    try:
        clean = validate_qc(changes)
    except QCSettingsError as exc:
        raise StudyError(exc.errors) from exc
    study.qc = {**(study.qc or {}), **clean}
    session.flush()
    # A changed threshold changes who is flagged, and flagged evaluators' votes leave the results.
    refresh_study_flags(session, study_id=study.id)
    schedule_attention_checks(session, study_id=study.id)  # once this commits, file work outside it
    return asdict(qc_settings(study))


def invite_url(study: Study, base_url: str | None = None) -> str:
    """The full link evaluators open to join the study."""
    base = (base_url or get_settings().base_url).rstrip("/")
    return base + INVITE_PATH.format(token=study.invite_token)


def study_progress(session: Session, *, study_id: int, settle_qc: bool = True) -> dict[str, Any]:
    """Counts for the study page: clips by status, pairs, votes, evaluators, and what is still missing.

    Attention-check pairs and their degraded clips are left out of every number but ``check_votes``: they
    serve quality control and never need a target number of votes. Votes are counted from the vote rows
    themselves, not from the denormalised counters on ``Pair``, so the page shows what is stored.
    ``settle_qc``: run the study's owed QC re-judgings first, as their spacing allows (``app.services.qc.settle``);
    a list of studies leaves it off.
    """
    if settle_qc:  # the flagged sessions after the owed QC re-judgings that their spacing allows (pages poll this)
        settle(session, study_id=study_id, spaced=True)
    study = session.get(Study, study_id)
    if study is None:
        raise StudyError(f"There is no study with id {study_id}.")
    clips = dict.fromkeys(("queued", "running", "done", "failed"), 0)
    for status, n in session.execute(
        select(Clip.status, func.count()).where(Clip.study_id == study_id, Clip.variant == "").group_by(Clip.status)
    ):
        clips[status] = n
    clips["total"] = sum(clips.values())

    votes_per_pair_q = (
        select(Vote.pair_id, func.count().label("n")).where(Vote.study_id == study_id).group_by(Vote.pair_id)
    ).subquery()
    rows = session.execute(
        select(Pair.kind, func.coalesce(votes_per_pair_q.c.n, 0))
        .outerjoin(votes_per_pair_q, votes_per_pair_q.c.pair_id == Pair.id)
        .where(Pair.study_id == study_id)
    ).all()
    normal_counts = [n for kind, n in rows if kind == "normal"]
    target = study.votes_per_pair
    votes = sum(normal_counts)
    votes_target = target * len(normal_counts)
    votes_needed = sum(max(0, target - n) for n in normal_counts)

    ev_total, ev_done, ev_flagged = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((Evaluator.completed_at.is_not(None), 1), else_=0)), 0),
            func.coalesce(func.sum(case((Evaluator.flagged.is_(True), 1), else_=0)), 0),
        ).where(Evaluator.study_id == study_id)
    ).one()
    open_assignments = session.scalar(
        select(func.count())
        .select_from(Assignment)
        .join(Evaluator, Evaluator.id == Assignment.evaluator_id)
        .where(Evaluator.study_id == study_id, Assignment.status == "open")
    )
    return {
        "study_id": study.id,
        "status": study.status,
        "prompts": session.scalar(select(func.count()).select_from(Prompt).where(Prompt.study_id == study_id)),
        "models": len(study.models),
        "clips": clips,
        "pairs": len(normal_counts),
        "check_pairs": len(rows) - len(normal_counts),
        "votes": votes,
        "check_votes": sum(n for kind, n in rows if kind != "normal"),
        "votes_per_pair": target,
        "votes_target": votes_target,
        "votes_needed": votes_needed,
        "pairs_short": sum(1 for n in normal_counts if n < target),
        "pairs_complete": sum(1 for n in normal_counts if n >= target),
        "percent_complete": round(100 * (votes_target - votes_needed) / votes_target, 1) if votes_target else 0.0,
        "evaluators": int(ev_total),
        "evaluators_completed": int(ev_done),
        "evaluators_flagged": int(ev_flagged),
        "assignments_open": int(open_assignments or 0),
    }


def builtin_prompts(themes: Iterable[str] | None = None) -> list[PromptSpec]:
    """Prompts of the built-in suite, all of them or those of the given themes (unknown themes are refused)."""
    suite = load_builtin_suite()
    if themes is None:
        return list(suite)
    wanted = [t.strip() for t in themes if t and t.strip()]
    known = sorted({p.theme for p in suite})
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise StudyError(f"Unknown theme(s): {', '.join(unknown)}. The built-in suite has: {', '.join(known)}.")
    if not wanted:
        raise StudyError("Pick at least one theme of the built-in suite.")
    return [p for p in suite if p.theme in wanted]


def builtin_themes() -> list[tuple[str, int]]:
    """(theme, number of prompts) in the built-in suite, in suite order."""
    return list(list_themes(load_builtin_suite()).items())
