"""Computed results per study, cached so a page view never recomputes unless the votes changed.

The cache is IN-PROCESS (one per web worker / CLI run): with N uvicorn workers each computes a study's
results once per change. It is keyed by (database, study, include_flagged) and validated by the vote
fingerprint (vote count, max vote id, digest of the flagged evaluators), which two indexed queries
produce. The vote frame itself is cached too and grown incrementally: a new vote loads only the rows with
a higher vote id; an unflag/flag only rewrites the ``flagged`` column; anything else (a deleted vote)
reloads the frame. Results are recomputed from the whole frame (the bootstrap needs every prompt), which
is the only cost left after a change, paid once per change and not per page view.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import database_key, read_session_scope, release_read
from app.models import Evaluator, Vote
from app.services.results_data import (
    VoteFingerprint,
    criterion_keys,
    load_vote_frame,
    pseudonym,
    vote_fingerprint,
)

T = TypeVar("T")
N_BOOT = 1000
SEED = 0


@dataclass
class CachedResults:
    study_id: int
    include_flagged: bool
    fingerprint: VoteFingerprint
    frame: pd.DataFrame
    results: dict
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    compute_seconds: float = 0.0
    _memo: dict = field(default_factory=dict, repr=False)

    def memo(self, key: str, fn: Callable[[], T]) -> T:
        """Derived figures (per-day counts, timeline) computed once per results, not once per page view."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]


@dataclass
class _FrameEntry:
    fingerprint: VoteFingerprint
    frame: pd.DataFrame


def compute(frame: pd.DataFrame, *, criteria: list[str], include_flagged: bool) -> dict:
    """The one call to the statistics (kept here so the dashboard, the API and the exports agree)."""
    from app.stats import compute_results

    return compute_results(frame, criteria=criteria or None, include_flagged=include_flagged, n_boot=N_BOOT,
                           seed=SEED)


class ResultsCache:
    def __init__(self, max_studies: int = 32) -> None:
        self.max_studies = max_studies
        self._frames: OrderedDict[tuple, _FrameEntry] = OrderedDict()
        self._results: OrderedDict[tuple, CachedResults] = OrderedDict()
        self._lock = threading.RLock()  # guards the dicts; computations hold a per-study lock instead
        self._study_locks: dict[tuple, threading.RLock] = {}
        self.computations = 0  # how many times results were computed (tests and the dashboard footer read it)
        self.frame_loads = {"full": 0, "incremental": 0, "reflag": 0}

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._results.clear()

    def frame(self, session: Session, *, study_id: int) -> pd.DataFrame:
        """The study's vote frame (flagged evaluators included, marked), reusing what is already loaded."""
        release_read(session)
        with read_session_scope() as reader:
            return self._frame(reader, study_id=study_id)

    def _frame(self, session: Session, *, study_id: int, fingerprint: VoteFingerprint | None = None) -> pd.DataFrame:
        fp = fingerprint or vote_fingerprint(session, study_id=study_id)
        key = (database_key(session), study_id)
        with self._study_lock(key):
            entry = self._frames.get(key)
            if entry is not None and entry.fingerprint == fp:
                return entry.frame
            frame = self._refresh(session, study_id=study_id, entry=entry, fp=fp)
            with self._lock:
                self._frames[key] = _FrameEntry(fp, frame)
                self._frames.move_to_end(key)
                while len(self._frames) > self.max_studies:
                    self._frames.popitem(last=False)
            return frame

    def _study_lock(self, key: tuple) -> threading.RLock:
        with self._lock:
            return self._study_locks.setdefault(key, threading.RLock())

    def _refresh(self, session: Session, *, study_id: int, entry: _FrameEntry | None,
                 fp: VoteFingerprint) -> pd.DataFrame:
        if entry is not None and fp.votes >= entry.fingerprint.votes:
            old = entry.fingerprint
            newer = session.scalar(select(func.count(Vote.id)).where(Vote.study_id == study_id,
                                                                     Vote.id > old.max_vote_id))
            # Only appended votes since last time (none deleted): load just those rows.
            if newer == fp.votes - old.votes:
                frame = entry.frame
                if fp.flagged != old.flagged:
                    self.frame_loads["reflag"] += 1
                    flagged = {pseudonym(p) for p in session.scalars(
                        select(Evaluator.public_id).where(Evaluator.study_id == study_id, Evaluator.flagged.is_(True)))}
                    frame = frame.assign(flagged=frame["evaluator"].isin(flagged))
                if newer:
                    self.frame_loads["incremental"] += 1
                    tail = load_vote_frame(session, study_id=study_id, after_vote_id=old.max_vote_id)
                    frame = pd.concat([frame, tail], ignore_index=True) if len(frame) else tail
                return frame
        self.frame_loads["full"] += 1
        return load_vote_frame(session, study_id=study_id)

    def results(self, session: Session, *, study_id: int, include_flagged: bool = False) -> CachedResults:
        # Read through a snapshot session: the caller's (on SQLite, write-locking) transaction ends first.
        release_read(session)
        with read_session_scope() as reader:
            return self._cached_results(reader, study_id=study_id, include_flagged=include_flagged)

    def _cached_results(self, session: Session, *, study_id: int, include_flagged: bool) -> CachedResults:
        fp = vote_fingerprint(session, study_id=study_id)
        key = (database_key(session), study_id, bool(include_flagged))
        hit = self._results.get(key)  # a hit needs no lock: a long computation elsewhere never delays it
        if hit is not None and hit.fingerprint == fp:
            return hit
        study_lock = self._study_lock(key[:2])
        # One computation per study at a time: a second request for the same change waits and reuses it,
        # while other studies' pages are served meanwhile.
        with study_lock:
            hit = self._results.get(key)
            if hit is not None and hit.fingerprint == fp:
                return hit
            frame = self._frame(session, study_id=study_id, fingerprint=fp)
            criteria = criterion_keys(session, study_id=study_id)
            release_read(session)
            started = time.perf_counter()
            results = compute(frame, criteria=criteria, include_flagged=include_flagged)
            entry = CachedResults(study_id=study_id, include_flagged=bool(include_flagged), fingerprint=fp,
                                  frame=frame, results=results, compute_seconds=time.perf_counter() - started)
            with self._lock:
                self.computations += 1
                self._results[key] = entry
                self._results.move_to_end(key)
                while len(self._results) > 2 * self.max_studies:
                    self._results.popitem(last=False)
            return entry


_CACHE = ResultsCache()


def get_cache() -> ResultsCache:
    return _CACHE


def _settle(session: Session, study_id: int) -> None:
    """Run the QC re-judgings the study is owed, by this process or any other (``app.services.qc.settle``), so
    that nothing counts votes whose cross-session judging is still pending. It ends ``session``'s read
    transaction first: what is read next is read after the settling."""
    from app.services.qc import settle  # here: qc imports app.services.trust, which imports this module

    settle(session, study_id=study_id)


def get_results(session: Session, *, study_id: int, include_flagged: bool = False) -> CachedResults:
    """The study's results from the process-wide cache, computed only if a vote or a QC flag changed; the
    re-judgings the study is owed run first."""
    _settle(session, study_id)
    return _CACHE.results(session, study_id=study_id, include_flagged=include_flagged)


def settled_frame(session: Session, *, study_id: int) -> pd.DataFrame:
    """The study's vote frame, its ``flagged`` column as of every re-judging owed (for exports)."""
    _settle(session, study_id)
    return _CACHE.frame(session, study_id=study_id)
