"""Importing clip folders (one sub-folder per model, ``<prompt id>.gif|.mp4|.webm``): check everything, then
store it all.

The whole batch is validated before anything is written, so a bad file leaves the study exactly as it was.
Every clip is stored in the study's format (setting ``clip_format``): GIFs are written again by the canonical
writer (``app.media.canonical``: pixels and delays, nothing else of the file); for an MP4/WebM study every file
(GIF, MP4 or WebM) is decoded and encoded again with the study-wide settings (``app.media.video``). Files
are saved under opaque random names.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope, snapshot_session_scope
from app.media.budget import GifBudgetError, UnsafeFileError, check_gif_budget, read_untrusted_file
from app.media.canonical import canonicalize, same_video
from app.media.gif import GifError, GifInfo, inspect_gif, sanitize_gif
from app.media.storage import StorageError, delete_media, read_bytes, store_bytes
from app.media.video import FORMATS, VideoError, check_video_budget, encoder_description, sniff
from app.media.video import canonicalize as canonicalize_video
from app.models import Assignment, Clip, Pair, Prompt, Study, StudyModel, Vote
from app.services.attention import schedule_attention_checks
from app.services.pairs import ensure_pairs

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class Signature:
    """What must be the same for every clip of a study, so that evaluators compare models, not formats."""

    frames: int
    width: int
    height: int
    fps: float

    def describe(self) -> str:
        return f"{self.frames} frames, {self.width}x{self.height}, {self.fps:g} fps"


@dataclass
class Mismatch:
    model: str
    file: str
    found: Signature
    expected: Signature

    @property
    def differs(self) -> list[str]:
        out = []
        if self.found.frames != self.expected.frames:
            out.append(f"frames {self.found.frames} vs {self.expected.frames}")
        if (self.found.width, self.found.height) != (self.expected.width, self.expected.height):
            out.append(f"size {self.found.width}x{self.found.height} vs {self.expected.width}x{self.expected.height}")
        if self.found.fps != self.expected.fps:
            out.append(f"fps {self.found.fps:g} vs {self.expected.fps:g}")
        return out


class ClipImportError(ValueError):
    """The batch was refused; ``errors`` lists every problem, ``mismatches`` the files that differ in format."""

    def __init__(self, errors: list[str], mismatches: list[Mismatch] | None = None,
                 expected: Signature | None = None):
        self.errors = list(errors)
        self.mismatches = list(mismatches or [])
        self.expected = expected
        head = "; ".join(self.errors[:3]) + (f"; ... ({len(self.errors)} problems in all)" if len(self.errors) > 3
                                             else "")
        super().__init__(f"import refused, nothing was changed: {head}")


CLIP_SUFFIXES = (".gif", ".mp4", ".webm")


@dataclass(frozen=True)
class ClipInfo:
    """Shape and rate of a stored clip, GIF or video."""

    width: int
    height: int
    frames: int
    fps: float
    shown_durations_ms: tuple[int, ...] = ()

    @property
    def animated(self) -> bool:
        return self.frames > 1

    @property
    def mixed_durations(self) -> bool:
        return len(set(self.shown_durations_ms)) > 1

    @classmethod
    def of_gif(cls, info: GifInfo) -> ClipInfo:
        return cls(info.width, info.height, info.frames, info.fps, info.shown_durations_ms)


def study_format(study: Study) -> str:
    """The format every clip of ``study`` is stored and served in (studies made before the setting: GIF)."""
    return str((study.settings or {}).get("clip_format") or "gif")


@dataclass
class _Planned:
    model: StudyModel
    prompt: Prompt
    rel: str
    data: bytes  # sanitized
    sha256: str
    info: ClipInfo
    existing: Clip | None
    action: str  # new | replace | unchanged


@dataclass
class ImportResult:
    created: int = 0
    replaced: int = 0
    unchanged: int = 0
    pairs_created: int = 0
    warnings: list[str] = field(default_factory=list)
    # Files of replaced clips, (name, store); delete them (``remove_media``) once the transaction has committed.
    obsolete_files: list[tuple[str, str]] = field(default_factory=list)
    signature: Signature | None = None
    per_model: dict[str, int] = field(default_factory=dict)


def _signature(info: ClipInfo) -> Signature:
    return Signature(info.frames, info.width, info.height, info.fps)


def _existing_signatures(session: Session, study_id: int, skip_ids: set[int]) -> Counter[Signature]:
    rows = session.execute(
        select(Clip.id, Clip.frames, Clip.width, Clip.height, Clip.fps).where(
            Clip.study_id == study_id, Clip.status == "done", Clip.variant == "", Clip.frames.is_not(None)
        )
    )
    signatures: Counter[Signature] = Counter()
    for cid, f, w, h, fps in rows:
        if cid not in skip_ids and f is not None and w is not None and h is not None and fps is not None:
            signatures[Signature(f, w, h, round(fps, 2))] += 1
    return signatures


def _clip_has_votes(session: Session, clip_id: int) -> bool:
    return bool(session.scalar(
        select(func.count()).select_from(Vote).join(Pair, Pair.id == Vote.pair_id)
        .where((Pair.clip_a_id == clip_id) | (Pair.clip_b_id == clip_id))
    ))


def _collect_files(folder: Path, models: dict[str, StudyModel], errors: list[str]) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            errors.append(f"{entry.name}: clips go in one sub-folder per model (e.g. {folder.name}/<model>/<prompt "
                          "id>.gif or .mp4 or .webm), not at the top level")
            continue
        if entry.name not in models:
            hint = [m for m in models if m.lower() == entry.name.lower()]
            errors.append(f"{entry.name}/: no model of that name in the study"
                          + (f" (did you mean {hint[0]!r}? names are case-sensitive)" if hint else
                             f"; its models are {', '.join(repr(m) for m in models)}"))
            continue
        for path in sorted(entry.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir() or path.suffix.lower() not in CLIP_SUFFIXES:
                errors.append(f"{entry.name}/{path.name}: not a clip (.gif, .mp4 or .webm)")
                continue
            if not path.resolve().is_relative_to(folder.resolve()):
                errors.append(f"{entry.name}/{path.name}: a link to a file outside {folder}; copy the GIF in instead")
                continue
            files.append((entry.name, path))
    return files


def _read_clip(raw: bytes, rel: str, fmt: str) -> tuple[bytes, ClipInfo]:
    """``raw`` checked from its headers, decoded and written again in the study's format ``fmt``."""
    kind = sniff(raw)
    suffix = Path(rel).suffix.lower().lstrip(".")
    if kind is None:
        raise VideoError("not a GIF, MP4 or WebM file (its first bytes are none of them)")
    if kind != suffix:
        raise VideoError(f"named .{suffix} but it is a {kind.upper()} file; rename it")
    if fmt == "gif":
        if kind != "gif":
            raise VideoError(f"the study's clips are GIFs (setting clip_format gif), this is {kind.upper()}; "
                             "make the study with clip_format mp4 or webm to compare videos, or export GIFs")
        # Headers within the pixel budget before anything decodes them (app/media/budget.py), then written
        # again by the one canonical writer: the stored bytes hold pixels and delays only (app/media/canonical.py).
        check_gif_budget(raw)
        data = canonicalize(sanitize_gif(raw))
        return data, ClipInfo.of_gif(inspect_gif(data))
    if kind == "gif":
        check_gif_budget(raw)
    else:
        check_video_budget(raw)
    data, decoded = canonicalize_video(raw, fmt)
    w, h = decoded.size
    return data, ClipInfo(w, h, len(decoded.frames), round(decoded.fps, 2))


def _plan_file(session: Session, path: Path, rel: str, model: StudyModel, prompt: Prompt, clip: Clip | None, *,
               seed: int, replace: bool, limit: int, errors: list[str], warnings: list[str],
               fmt: str = "gif") -> _Planned | None:
    """One file checked (size, format, animation) and what importing it would do; None (with an error) if refused."""
    try:
        # A regular file of bounded size (a FIFO would block forever), whose headers fit the pixel budget
        # before anything decodes it (a few bytes can claim gigabytes of pixels): app/media/budget.py, video.py.
        raw = read_untrusted_file(path, max_bytes=limit)
        data, info = _read_clip(raw, rel, fmt)
    except (GifError, GifBudgetError, UnsafeFileError, VideoError) as exc:
        errors.append(f"{rel}: {exc}")
        return None
    if not info.animated:
        errors.append(f"{rel}: a still image (1 frame); clips must be animated")
        return None
    if info.mixed_durations:
        warnings.append(f"{rel}: frame delays differ ({sorted(set(info.shown_durations_ms))} ms); "
                        f"compared at its mean rate of {info.fps:g} fps")
    sha = hashlib.sha256(data).hexdigest()
    if clip is None:
        action = "new"
    elif clip.status == "done" and _same_video(clip, data):
        action = "unchanged"
    elif clip.status != "done":
        action = "replace"  # a queued or failed generation slot: nothing to lose
    elif not replace:
        errors.append(f"{rel}: prompt {prompt.external_id!r} already has a different clip for model "
                      f"{model.name!r} (seed {seed}); pass --replace to replace it")
        return None
    elif _clip_has_votes(session, clip.id):
        errors.append(f"{rel}: the clip it would replace already has votes; replacing it would change what "
                      "evaluators judged. Make a new study (or a new seed) instead")
        return None
    else:
        action = "replace"
    return _Planned(model, prompt, rel, data, sha, info, clip, action)


def _same_video(clip: Clip, data: bytes) -> bool:
    """Whether the stored clip shows the same frames and delays as ``data``, whatever its bytes (a clip stored
    before the canonical writer, or under another secret, differs in them)."""
    if not clip.storage_name:
        return False
    try:
        stored = read_bytes(clip.storage_name, clip.storage)
        if sniff(data) in FORMATS:  # the video encoder is deterministic: the same frames give the same bytes
            return stored == data
        if sniff(stored) != "gif":
            return False
        return same_video(stored, data)
    except (OSError, ValueError, StorageError):
        return False


def _check_format(session: Session, study_id: int, planned: list[_Planned],
                  errors: list[str]) -> tuple[list[Mismatch], Signature | None]:
    """Every clip of the study, stored or new, must share one format: the mismatches and the expected one."""
    replaced_ids = {p.existing.id for p in planned if p.existing is not None and p.action == "replace"}
    counts = _existing_signatures(session, study_id, replaced_ids)
    stored_counts = Counter(counts)
    for p in planned:
        if p.action != "unchanged":
            counts[_signature(p.info)] += 1
    mismatches: list[Mismatch] = []
    if not counts:
        return mismatches, None
    # The format already stored wins; otherwise the most common one (ties broken by a stable order).
    pool = stored_counts or counts
    expected = max(pool, key=lambda s: (pool[s], s.frames, s.width, s.height, s.fps))
    for p in planned:
        sig = _signature(p.info)
        if sig != expected and p.action != "unchanged":
            mismatches.append(Mismatch(p.model.name, p.rel, sig, expected))
    if mismatches:
        source = "the clips already in the study" if stored_counts else "most files"
        errors.append(f"{len(mismatches)} file(s) differ in frame count, size or fps from {source} "
                      f"({expected.describe()}); every model must be rendered with the same settings")
    return mismatches, expected


def plan_gif_import(session: Session, *, study_id: int, folder: Path, seed: int = 0, replace: bool = False,
                    progress: Progress | None = None) -> tuple[list[_Planned], ImportResult]:
    """Check a folder without writing anything; raises ``ClipImportError`` listing every problem."""
    folder = Path(folder)
    study = session.get(Study, study_id)
    if study is None:
        raise ClipImportError([f"there is no study with id {study_id}"])
    if not folder.is_dir():
        raise ClipImportError([f"{folder} is not a folder; give a folder with one sub-folder per model"])
    models = {m.name: m for m in study.models}
    prompts = {p.external_id: p for p in session.scalars(select(Prompt).where(Prompt.study_id == study_id))}
    existing = {(c.model_id, c.prompt_id): c for c in session.scalars(
        select(Clip).where(Clip.study_id == study_id, Clip.seed == seed, Clip.variant == ""))}
    limit = get_settings().max_upload_bytes

    errors: list[str] = []
    warnings: list[str] = []
    files = _collect_files(folder, models, errors)
    if not files and not errors:
        errors.append(f"{folder} holds no clips; expected {folder.name}/<model>/<prompt id>.gif (or .mp4, .webm) "
                      f"with models {', '.join(repr(m) for m in models)}")

    planned: list[_Planned] = []
    seen: dict[tuple[str, str], str] = {}
    for done, (model_name, path) in enumerate(files, start=1):
        if progress:
            progress("checking", done, len(files))
        rel = f"{model_name}/{path.name}"
        if (model_name, path.stem) in seen:
            errors.append(f"{rel}: same prompt as {seen[model_name, path.stem]}; keep one of them")
            continue
        seen[model_name, path.stem] = rel
        prompt = prompts.get(path.stem)
        if prompt is None:
            errors.append(f"{rel}: no prompt with id {path.stem!r} in the study (file names must be prompt ids)")
            continue
        model = models[model_name]
        item = _plan_file(session, path, rel, model, prompt, existing.get((model.id, prompt.id)), seed=seed,
                          replace=replace, limit=limit, errors=errors, warnings=warnings, fmt=study_format(study))
        if item is not None:
            planned.append(item)

    mismatches, expected = _check_format(session, study_id, planned, errors)
    if errors:
        raise ClipImportError(errors, mismatches, expected)

    result = ImportResult(warnings=warnings, signature=expected)
    covered = {p.model.name for p in planned}
    missing = [m for m in models if m not in covered]
    if missing:
        warnings.append(f"no folder for model(s) {', '.join(missing)}: their prompts get pairs once their clips "
                        "are in")
    return planned, result


def run_gif_import(*, study_id: int, folder: Path, seed: int = 0, replace: bool = False,
                   progress: Progress | None = None) -> ImportResult:
    """``import_gif_folder`` in two transactions of its own, so the slow part holds no lock.

    Reading, checking and re-encoding every file (seconds to minutes) happens in a snapshot transaction that
    never takes SQLite's write lock; only storing the checked files and writing their rows happens in the
    write transaction, after the plan is checked against the clips as they are then (``_recheck``). On
    SQLite an import used to hold the write lock from its first query to its commit: votes and logins
    waited behind it.
    """
    with snapshot_session_scope() as reader:
        plan = plan_gif_import(reader, study_id=study_id, folder=folder, seed=seed, replace=replace,
                               progress=progress)
    with session_scope() as session:
        return import_gif_folder(session, study_id=study_id, folder=folder, seed=seed, replace=replace,
                                 progress=progress, plan=plan)


def _recheck(session: Session, planned: list[_Planned], *, study_id: int, seed: int) -> None:
    """A plan made in an earlier transaction still holds: each file's clip is as the plan saw it, a clip to be
    replaced still has no votes, and the formats still agree. Its clips are re-read into ``session``."""
    current = {(c.model_id, c.prompt_id): c for c in session.scalars(
        select(Clip).where(Clip.study_id == study_id, Clip.seed == seed, Clip.variant == ""))}
    changed: list[str] = []
    for p in planned:
        now, before = current.get((p.model.id, p.prompt.id)), p.existing
        seen = None if before is None else (before.id, before.status, before.sha256, before.storage_name)
        voted = now is not None and p.action == "replace" and now.status == "done" and _clip_has_votes(session, now.id)
        if (None if now is None else (now.id, now.status, now.sha256, now.storage_name)) != seen or voted:
            changed.append(f"{p.rel}: its clip changed while the files were being checked (another import, a "
                           "worker or a vote); run the import again")
        p.existing = now
    mismatches, expected = _check_format(session, study_id, planned, changed)
    if changed:
        raise ClipImportError(changed, mismatches, expected)


def import_gif_folder(session: Session, *, study_id: int, folder: Path, seed: int = 0, replace: bool = False,
                      progress: Progress | None = None,
                      plan: tuple[list[_Planned], ImportResult] | None = None) -> ImportResult:
    """Validate, then store every GIF of ``folder`` and create or update its clip rows; makes the pairs.

    Runs in the caller's transaction. On any problem ``ClipImportError`` is raised before a row or file is
    written; if storing fails midway the files written so far are removed and the caller's rollback undoes
    the rows. ``plan``: a ``plan_gif_import`` made in an earlier transaction (``run_gif_import``), checked
    again here instead of reading the files again.
    """
    if plan is None:
        plan = plan_gif_import(session, study_id=study_id, folder=folder, seed=seed, replace=replace,
                               progress=progress)
    else:
        _recheck(session, plan[0], study_id=study_id, seed=seed)
    planned, result = plan
    written: list[tuple[str, str]] = []
    try:
        for done, p in enumerate(planned, start=1):
            if progress:
                progress("storing", done, len(planned))
            result.per_model[p.model.name] = result.per_model.get(p.model.name, 0) + 1
            if p.action == "unchanged":
                result.unchanged += 1
                continue
            stored = store_bytes(p.data, suffix="." + (sniff(p.data) or "gif"))
            written.append((stored.storage_name, stored.store))
            clip = p.existing
            if clip is None:
                clip = Clip(study_id=study_id, model_id=p.model.id, prompt_id=p.prompt.id, seed=seed, variant="")
                session.add(clip)
                result.created += 1
            else:
                if clip.storage_name:
                    result.obsolete_files.append((clip.storage_name, clip.storage))
                result.replaced += 1
            clip.origin = "imported"
            clip.status = "done"
            clip.error = None
            if clip.master_name:  # a generated clip's master and level no longer describe this file
                result.obsolete_files.append((clip.master_name, clip.storage))
            clip.master_name = clip.fit_level = clip.lossy_level = clip.psnr_db = None
            clip.storage_name = stored.storage_name
            clip.storage = stored.store
            clip.sha256 = stored.sha256
            clip.size_bytes = stored.size_bytes
            clip.width, clip.height = p.info.width, p.info.height
            clip.frames = p.info.frames
            clip.fps = p.info.fps
            fmt = sniff(p.data)
            if fmt in FORMATS:  # the clips manifest shows the encoder and settings every clip went through
                clip.generation = {**(clip.generation or {}), "encoding": encoder_description(fmt)}
        session.flush()
        result.pairs_created = ensure_pairs(session, study_id=study_id)
        _drop_stale_copies(session, result, [p.existing.id for p in planned
                                             if p.existing is not None and p.action == "replace"])
        # Attention checks need real clips to copy, so they are made as soon as clips exist: once this commits,
        # with their file work outside the transaction (app/services/attention.py, make_attention_checks).
        schedule_attention_checks(session, study_id=study_id)
    except BaseException:
        remove_media(written)
        raise
    return result


def _drop_stale_copies(session: Session, result: ImportResult, replaced_ids: list[int]) -> None:
    """Delete the attention-check copies made from the old files of replaced clips (remade afterwards).

    Kept, a "same clip twice" check would show the old clip against the new one and flag evaluators who
    answered honestly. Replacing is refused once any pair of the clip has votes (``_clip_has_votes``), so
    these checks have none; an open assignment of one goes with it.
    """
    if not replaced_ids:
        return
    stale = session.execute(select(Clip.id, Clip.storage_name, Clip.storage)
                            .where(Clip.source_clip_id.in_(replaced_ids))).all()
    if not stale:
        return
    ids = [clip_id for clip_id, _, _ in stale]
    pair_ids = select(Pair.id).where(Pair.clip_b_id.in_(ids)).scalar_subquery()
    session.execute(delete(Assignment).where(Assignment.pair_id.in_(pair_ids)))
    session.execute(delete(Pair).where(Pair.clip_b_id.in_(ids)))
    session.execute(delete(Clip).where(Clip.id.in_(ids)))
    result.obsolete_files.extend((name, store) for _, name, store in stale if name)


def remove_media(stored: list[tuple[str, str]]) -> None:
    """Delete stored files (after a rollback, or replaced files after a commit); missing files are fine, and a
    store that cannot be reached leaves them to the orphan sweep (``app.services.storage.sweep_orphans``)."""
    for name, store in stored:
        try:
            delete_media(name, store)
        except (OSError, ValueError, StorageError):
            continue
