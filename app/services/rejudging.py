"""How often the study-wide QC re-judgings (address clusters, rater reliability) run after votes, and what is owed.

Both read every answer of the study, so their cost grows with it: at 6,000 votes one reliability re-judging took
0.5 s of CPU and one cluster re-judging a few ms per session sharing an address, and a vote path that ran them
at their triggers (every 3 votes of a session sharing its address, every 10 completed sessions) spent more on
them than on the votes as a study grew (issue 16; bench/launch.py). The spacing below bounds their share of a
core, not the length of one re-judging, and that length is a pause for the votes in flight (it holds a rating
slot and shares the interpreter): since the reliability rule reads the answers as integer columns, one takes
about 0.06 s at 5,000 votes and 0.23 s at 20,000 (bench/rejudging.py; the estimate alone took about 0.5 s there
answer by answer, 0.04-0.06 s on columns). They run after the vote's commit, reading a snapshot
(``app.services.qc``): inside the vote's write transaction, each held every other rater's vote.

The reliability check is triggered at a step that grows with the study (``qc.reliability_step``), the cluster
check every third vote of a session behind a shared address; both are spaced here. A re-judging that was
expensive last time waits: after one that took ``t`` seconds, the next runs no sooner than ``SPACING * t``
later (at most 1/SPACING, 2.5%, of one core per study, check and process). A trigger that falls inside that
wait, or while the same check is running, is owed, not dropped: the first vote of the study after the wait runs
it, whatever kind of vote that is, and results settle what is owed before they count anything. The cluster
check of a session that completes is never held back by the wait; the other triggers of a busy study are, even
cheap ones: a cluster check every third vote of each session behind a shared address, at 1.5 ms each, alone
cost 11% of the server's time; reliability checks at its step, 19% where sessions completed every few seconds.
A large, busy study's cross-session flags are at most ``SPACING * t`` behind its votes.

What is owed here is owed by this process only, and lost with it; the promise to results is kept in the
database (``app.services.rejudging_debts``): this module decides when the vote path runs a re-judging, not
whether one is owed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.services.rejudging_locks import Busy

CHEAP_S = 0.0  # re-judgings faster than this are never held back (none: see above)
SPACING = 40.0
SETTLE_WAIT_S = 30.0


@dataclass
class Rejudging:
    """Per (database, study, check): when it last ran and what it cost, and which are owed. Thread-safe."""

    clock: Callable[[], float] = time.monotonic
    cheap_s: float = CHEAP_S
    spacing: float = SPACING
    _last: dict[tuple, tuple[float, float]] = field(default_factory=dict)  # key -> (started, seconds it took)
    _owed: dict[tuple, Callable[[], object]] = field(default_factory=dict)  # key -> the job, to run later
    _running: set[tuple] = field(default_factory=set)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def run_if_allowed(self, key: tuple, *, triggered: bool, job: Callable[[], object], force: bool = False) -> bool:
        """Run ``job()`` (which opens its own sessions) now if it was ``triggered`` (or is owed) and its wait is
        over; else owe it (``job`` is kept for the next call or ``settle``) if triggered. ``force``: run now
        whatever the wait (a trigger that must not be late, e.g. a session completing). One run per key at a time:
        a trigger while it runs is owed (the running one may have read its snapshot before that vote).

        Returns whether it ran."""
        now = self.clock()
        with self._lock:
            owed = key in self._owed
            if not (triggered or owed or force):
                return False
            last = self._last.get(key)
            if key in self._running or (not force and last is not None and last[1] >= self.cheap_s
                                        and now - last[0] < self.spacing * last[1]):
                self._owed[key] = job
                return False
            self._owed.pop(key, None)
            self._running.add(key)
        started = self.clock()
        try:
            job()
        except Busy:
            with self._lock:
                self._owed.setdefault(key, job)
            return False
        except BaseException:
            with self._lock:
                self._owed.setdefault(key, job)  # failed (a busy database, say): still owed
            raise
        finally:
            with self._lock:
                self._running.discard(key)
                self._lock.notify_all()
        with self._lock:
            self._last[key] = (started, self.clock() - started)
        return True

    def owed(self, key: tuple) -> bool:
        with self._lock:
            return key in self._owed

    def settle(self, prefix: tuple, timeout: float = SETTLE_WAIT_S) -> int:
        """Run now every owed re-judging whose key starts with ``prefix`` (e.g. (database, study id)); return how
        many ran. Results call it before counting votes (``app.services.qc.settle``); a re-judging of the study
        running now is waited for (up to ``timeout``), since it may be judging votes the results are about to
        count."""
        with self._lock:
            self._lock.wait_for(lambda: not any(k[:len(prefix)] == prefix for k in self._running),
                                timeout=timeout)
            due = [(k, job) for k, job in self._owed.items() if k[:len(prefix)] == prefix]
        return sum(self.run_if_allowed(key, triggered=True, force=True, job=job) for key, job in due)


REJUDGING = Rejudging()
