"""Operations on the clip store: check it against the database, move a study between stores, sweep orphans,
say where a study's clips live, and fetch an import from a bucket prefix.

Every clip row names its object (``Clip.storage_name``) and the store that holds it (``Clip.storage``); the
store itself is reached only through ``app.media.storage``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.media.storage import (
    LOCAL,
    S3,
    STORES,
    ObjectMissing,
    S3Backend,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    backend,
)
from app.models import Clip

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (done, total)


# ------------------------------------------------------------------------------------------------- check


@dataclass
class CheckReport:
    store: str
    where: str
    checked: int = 0
    missing: list[int] = field(default_factory=list)  # clip ids whose object is not in the store
    mismatched: list[int] = field(default_factory=list)  # clip ids whose object's sha256 differs from the row
    orphans: list[str] = field(default_factory=list)  # objects no clip names
    problem: str | None = None  # the store could not be read at all

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.missing and not self.mismatched


def check_storage(session: Session, *, store: str | None = None, study_id: int | None = None,
                  progress: Progress | None = None) -> CheckReport:
    """Every done clip recorded in ``store`` (default: the configured one) read back and hashed against its row;
    then the objects no clip names. Read-only."""
    target = backend(store)
    report = CheckReport(store=target.kind, where=target.describe())
    query = select(Clip.id, Clip.storage_name, Clip.sha256).where(
        Clip.status == "done", Clip.storage_name.is_not(None), Clip.storage == target.kind).order_by(Clip.id)
    if study_id is not None:
        query = query.where(Clip.study_id == study_id)
    rows = session.execute(query).all()
    try:
        target.probe()
        for done, (clip_id, name, sha) in enumerate(rows, start=1):
            try:
                data = target.get(name or "")
            except ObjectMissing:
                report.missing.append(clip_id)
            else:
                if sha is not None and hashlib.sha256(data).hexdigest() != sha:
                    report.mismatched.append(clip_id)
            report.checked += 1
            if progress:
                progress(done, len(rows))
        if study_id is None:  # an orphan belongs to no study, so only a whole-store check can name them
            named = _named(session, target.kind)
            report.orphans = sorted(o.name for o in target.list() if o.name not in named)
    except StorageError as exc:
        report.problem = str(exc)
    return report


def _named(session: Session, store: str) -> set[str]:
    """Every object a clip row names in ``store``: its served file and its uncompressed master (the served copy
    is made from the master at its group's lossy level, app/services/pair_encoding.py)."""
    rows = session.execute(select(Clip.storage_name, Clip.master_name).where(Clip.storage == store)).all()
    return {name for row in rows for name in row if name}


def create_bucket() -> str:
    """Create the configured bucket (only ever on the operator's request); returns what was created."""
    target = backend(S3)
    assert isinstance(target, S3Backend)  # backend(S3) is always one
    target.create_bucket()
    return target.describe()


# ----------------------------------------------------------------------------------------------- orphans


def sweep_orphans(session: Session, *, older_than_seconds: float, store: str | None = None,
                  now: datetime | None = None) -> list[str]:
    """Delete objects of ``store`` that no clip names and that are older than ``older_than_seconds``: uploads
    whose clip was never recorded (a worker killed between upload and record, a lease lost, an import rolled
    back while the store was down), and temp files of interrupted local writes. Returns their names.

    The store is listed before the database is read, so an object recorded meanwhile is seen as named; the age
    keeps an upload whose row is about to be committed.
    """
    target = backend(store)
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=older_than_seconds)
    listed = [o for o in target.list() if o.modified < cutoff]
    if not listed:
        return []
    named = _named(session, target.kind)
    removed: list[str] = []
    for obj in listed:
        if obj.name in named:
            continue
        if obj.name.startswith(".") and target.kind == LOCAL:
            # A temp file of an interrupted atomic write (LocalBackend.put): never a clip's name.
            Path(get_settings().resolved_media_dir / obj.name).unlink(missing_ok=True)
        else:
            target.delete(obj.name)
        removed.append(obj.name)
    if removed:
        log.warning("removed %d orphaned object(s) older than %.0f s from %s: %s", len(removed),
                    older_than_seconds, target.describe(), removed[:20])
    return removed


# ---------------------------------------------------------------------------------------------- migrate


@dataclass
class MigrateReport:
    to: str
    where: str
    total: int = 0
    copied: int = 0
    already: int = 0  # clips already in the target store (a resumed run)
    failed: dict[int, str] = field(default_factory=dict)


def migrate_study(*, study_id: int, to: str, progress: Progress | None = None) -> MigrateReport:
    """Copy every stored clip of the study into ``to``, one clip at a time, and point its row there.

    Each clip: read from its store, write under the same opaque name, read back and hashed, and only then the
    row switched (its own short transaction). Stopped at any point, a second run goes on where this one
    stopped; the clip is served from its old store until its row switches. The source copies are kept (the
    orphan sweep of that store removes them once no row names them, after ``storage_orphan_seconds``).
    """
    if to not in STORES:
        raise ValueError(f"unknown store {to!r}; use {' or '.join(STORES)}")
    target = backend(to)
    target.probe()  # refused before anything is copied: wrong credentials or a missing bucket
    report = MigrateReport(to=to, where=target.describe())
    with session_scope() as session:
        rows = session.execute(select(Clip.id, Clip.storage_name, Clip.storage, Clip.sha256, Clip.master_name).where(
            Clip.study_id == study_id, Clip.storage_name.is_not(None)).order_by(Clip.id)).all()
    report.total = len(rows)
    for done, (clip_id, name, source, sha, master) in enumerate(rows, start=1):
        if source == to:
            report.already += 1
        else:
            try:
                if master:  # the master first: the row switches store only once both are there
                    target.put(master, backend(source).get(master))
                _copy_one(clip_id, name or "", source, sha, to)
                report.copied += 1
            except StorageUnavailable:
                raise  # the rest would fail the same way; run the command again once the store answers
            except (StorageError, OSError, ValueError) as exc:
                report.failed[clip_id] = str(exc)
        if progress:
            progress(done, len(rows))
    return report


def _copy_one(clip_id: int, name: str, source: str, sha: str | None, to: str) -> None:
    data = backend(source).get(name)
    if sha is not None and hashlib.sha256(data).hexdigest() != sha:
        raise ValueError(f"clip {clip_id}: its stored object does not match its recorded sha256; not copied "
                         "(run `blindpair storage check`)")
    target = backend(to)
    target.put(name, data)
    if hashlib.sha256(target.get(name)).hexdigest() != hashlib.sha256(data).hexdigest():
        raise ValueError(f"clip {clip_id}: the copy read back differs from the original")
    with session_scope() as session:
        session.execute(update(Clip).where(Clip.id == clip_id, Clip.storage_name == name, Clip.storage == source)
                        .values(storage=to), execution_options={"synchronize_session": False})


# ------------------------------------------------------------------------------------------------ status


@dataclass(frozen=True)
class StorageStatus:
    """What the study page says: where the clips live, and a problem in words (None when the store answers)."""

    where: list[str]
    counts: dict[str, int]
    problem: str | None


_probe_cache: dict[str, tuple[float, str | None]] = {}
PROBE_SECONDS = 30.0


def _probe(store: str) -> str | None:
    """The store's problem in words, or None; asked at most every PROBE_SECONDS per process, so a study page
    does not wait on a store that is down more than once in a while."""
    cached = _probe_cache.get(store)
    if cached is not None and time.monotonic() - cached[0] < PROBE_SECONDS:
        return cached[1]
    try:
        backend(store).probe()
        problem = None
    except StorageUnavailable as exc:
        problem = f"The clip store is not answering: {exc}. Evaluators get 'try again' for clips until it returns."
    except StorageError as exc:
        problem = f"The clip store refuses access: {exc}."
    _probe_cache[store] = (time.monotonic(), problem)
    return problem


def storage_status(session: Session, *, study_id: int) -> StorageStatus:
    counts: dict[str, int] = {store: int(n) for store, n in session.execute(
        select(Clip.storage, func.count()).where(Clip.study_id == study_id, Clip.storage_name.is_not(None))
        .group_by(Clip.storage)).tuples()}
    configured = get_settings().storage
    stores = sorted(set(counts) | {configured})
    where: list[str] = []
    problems: list[str] = []
    for store in stores:
        try:
            described = backend(store).describe()
        except StorageError as exc:
            problems.append(str(exc))
            continue
        n = counts.get(store, 0)
        where.append(f"{n} clip(s) in {described}" + (" (new clips go here)" if store == configured else ""))
        problem = _probe(store)
        if problem:
            problems.append(problem)
    return StorageStatus(where=where, counts=counts, problem=" ".join(problems) or None)


# ------------------------------------------------------------------------------------------------ import


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix/")."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// address")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket; write s3://<bucket>/<prefix>")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


def download_prefix(url: str, dest: Path, *, max_bytes: int) -> int:
    """Copy ``s3://bucket/prefix/<model>/<prompt id>.gif`` objects into ``dest/<model>/<prompt id>.gif`` (with
    the configured endpoint and credentials), for the folder import to check like any folder. Objects larger
    than ``max_bytes`` are refused before download. Returns how many objects were copied."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_url(url)
    settings = get_settings().model_copy(update={"s3_bucket": bucket, "s3_prefix": prefix})
    client: Any = S3Backend(settings).client
    n = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                rel = item["Key"][len(prefix):]
                parts = rel.split("/")
                if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
                    continue  # the folder import reports what is missing; deeper keys are not clips
                if int(item["Size"]) > max_bytes:
                    raise ValueError(f"{url}/{rel} is {item['Size']} bytes, over the {max_bytes}-byte limit "
                                     "(BLINDPAIR_MAX_UPLOAD_BYTES)")
                path = dest / parts[0] / parts[1]
                path.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item["Key"], str(path))
                n += 1
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchBucket", "404"}:
            raise StorageConfigError(f"the bucket {bucket!r} does not exist at "
                                     f"{settings.s3_endpoint_url or 'AWS S3'}") from exc
        raise StorageConfigError(f"reading {url} was refused ({code}): check AWS_ACCESS_KEY_ID / "
                                 "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and BLINDPAIR_S3_ENDPOINT_URL") from exc
    except (BotoCoreError, OSError) as exc:
        raise StorageUnavailable(f"reading {url}: the store cannot be reached ({type(exc).__name__}); check "
                                 "BLINDPAIR_S3_ENDPOINT_URL and that the store is running") from exc
    return n

