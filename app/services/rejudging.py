"""How often the study-wide QC re-judgings (address clusters, rater reliability) may run inside a vote.

Both read every answer of the study, so their cost grows with it: at 6,000 votes one reliability re-judging took
0.5 s of CPU and one cluster re-judging a few ms per session sharing an address, and a vote path that ran them
at their triggers (every 3 votes of a session sharing its address, every 10 completed sessions) spent more on
them than on the votes as a study grew (issue 16; bench/launch.py). Worse, each ran inside a vote's write
transaction, holding every other rater's vote.

The reliability check now runs at a step that grows with the study (``qc.reliability_step``); this spacing
is for the cluster check's frequent trigger. A re-judging that was expensive last time waits: after one that
took ``t`` seconds, the next runs no sooner than ``SPACING * t`` later (at most 1/SPACING, 2.5%, of one core
per study, check and process). A trigger that falls inside that wait is owed, not dropped: the first vote of
the study after the wait runs it, whatever kind of vote that is, and results settle what is owed before they
count anything. The cluster check of a session that completes is never held back (its completion code is
shown, its answers count from then on); the other triggers of a busy study are, even cheap ones: a cluster
check every third vote of each session behind a shared address, at 1.5 ms each, alone cost 11% of the
server's time. A large, busy study's cross-session flags are at most ``SPACING * t`` behind its votes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

CHEAP_S = 0.0  # re-judgings faster than this are never held back (none: see above)
SPACING = 40.0


@dataclass
class Rejudging:
    """Per (database, study, check): when it last ran and what it cost, and which are owed. Thread-safe."""

    clock: Callable[[], float] = time.monotonic
    cheap_s: float = CHEAP_S
    spacing: float = SPACING
    _last: dict[tuple, tuple[float, float]] = field(default_factory=dict)  # key -> (started, seconds it took)
    _owed: dict[tuple, Callable[[Any], object]] = field(default_factory=dict)  # key -> the job, to run later
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run_if_allowed(self, key: tuple, session: Any, *, triggered: bool, job: Callable[[Any], object],
                       force: bool = False) -> bool:
        """Run ``job(session)`` now if it was ``triggered`` (or is owed) and its wait is over; else owe it (``job``
        is kept for ``settle``, which runs it in a transaction of its own) if triggered. ``force``: run now
        whatever the wait (a trigger that must not be late, e.g. a session completing).

        Returns whether it ran."""
        now = self.clock()
        with self._lock:
            owed = key in self._owed
            if not (triggered or owed or force):
                return False
            last = self._last.get(key)
            if (not force and last is not None and last[1] >= self.cheap_s
                    and now - last[0] < self.spacing * last[1]):
                self._owed[key] = job
                return False
            self._owed.pop(key, None)
        started = self.clock()
        try:
            job(session)
        except BaseException:
            with self._lock:
                self._owed[key] = job  # the vote's transaction rolls back with it: still owed
            raise
        with self._lock:
            self._last[key] = (started, self.clock() - started)
        return True

    def owed(self, key: tuple) -> bool:
        with self._lock:
            return key in self._owed

    def settle(self, prefix: tuple, session_scope: Callable[[], AbstractContextManager[Any]]) -> int:
        """Run now every owed re-judging whose key starts with ``prefix`` (e.g. (database, study id)), each in
        its own ``session_scope()`` transaction; return how many ran. Results call it before counting votes."""
        with self._lock:
            due = [(k, job) for k, job in self._owed.items() if k[:len(prefix)] == prefix]
        ran = 0
        for key, job in due:
            with session_scope() as session:
                ran += self.run_if_allowed(key, session, triggered=True, force=True, job=job)
        return ran

REJUDGING = Rejudging()

