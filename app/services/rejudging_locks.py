"""Two processes never re-judge the same QC rule of one study at once.

The re-judging with the older snapshot could write last and put back verdicts the newer one had corrected, and
pay debts (app/services/rejudging_debts.py) with them. Within one process ``app.services.rejudging`` runs one at
a time; across processes ``exclusive`` holds the (study, rule) for the whole re-judging. PostgreSQL: a
session-level advisory lock on a connection of its own. SQLite, where one web process is the deployment
(docs/performance.md) but a CLI (``blindpair analyze``) may settle beside it: a file lock beside the database
file, on one machine. A caller that finds it held gets ``Busy`` and owes the re-judging.
"""

from __future__ import annotations

import fcntl
import os
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

_LOCK_POLL_S = 0.05


class Busy(Exception):
    """The re-judging is running elsewhere (another process) right now: nothing ran, and the trigger stays owed."""


@contextmanager
def exclusive(engine: Engine, *, study_id: int, rule: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the re-judging of ``rule`` for the study against other processes; ``Busy`` if another process still
    holds it after ``wait_s`` seconds. An in-memory SQLite database has no other process."""
    what = f"the {rule} re-judging of study {study_id}"
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, *_lock_keys(study_id, rule), what=what, wait_s=wait_s):
            yield
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        # realpath: one database reached through two paths (a symlink) is one lock.
        folder = Path(os.path.realpath(f"{engine.url.database}.rejudging-locks"))
        with _file_lock(folder / f"study-{study_id}-{rule}.lock", what=what, wait_s=wait_s):
            yield
    else:
        yield


def _lock_keys(study_id: int, rule: str) -> tuple[int, int]:
    """PostgreSQL's two-integer advisory lock key: the rule (a stable 31-bit hash of its name) and the study."""
    return zlib.crc32(f"blindpair-rejudging:{rule}".encode()) & 0x7FFFFFFF, study_id


def _wait(deadline: float, what: str) -> None:
    if time.monotonic() >= deadline:
        raise Busy(f"{what} is running in another process")
    time.sleep(_LOCK_POLL_S)


@contextmanager
def _file_lock(path: Path, *, what: str, wait_s: float) -> Iterator[None]:
    # flock, not lockf: a POSIX record lock is the process's, and closing any descriptor of the file drops it.
    # Read-only and world-readable (the umask decides): a CLI run by another user than the server's must be able
    # to take the same lock, and flock needs no write access.
    path.parent.mkdir(mode=0o777, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                _wait(deadline, what)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _advisory_lock(engine: Engine, rule_key: int, study_key: int, *, what: str, wait_s: float) -> Iterator[None]:
    # A connection of its own, outside any transaction the re-judging opens: a session-level advisory lock lasts
    # until unlocked or until the connection closes (a process that dies releases it). Behind pgbouncer this
    # needs session pooling: in transaction pooling the unlock may reach another server connection.
    with engine.connect() as conn:
        deadline = time.monotonic() + wait_s
        while not conn.scalar(select(func.pg_try_advisory_lock(rule_key, study_key))):
            conn.rollback()  # no transaction open while it waits
            _wait(deadline, what)
        conn.commit()  # end the transaction the lock query began: the lock is the session's, not its
        try:
            yield
        finally:
            conn.execute(select(func.pg_advisory_unlock(rule_key, study_key)))
            conn.commit()
