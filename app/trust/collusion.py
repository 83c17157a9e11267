"""Sessions of one address that lean to one model far more than the study's other sessions.

The attack this answers: scripted sessions from one address, paced like people and passing every attention
check, that always pick the same model. Each session alone looks like a decided rater. FastChat's arena
flags single users with a sequential test of each vote against the distribution of votes on that model pair
(``outlier_detect`` in fastchat/serve/monitor/elo_analysis.py: a product of 1/(2p) over the user's votes,
flagged once it passes 1/alpha); against a balanced population a one-sided vote has p = 1/2 there and adds
no evidence, so a swarm pushing one side of an even contest is never seen. What betrays the swarm is that its
sessions agree with *each other* far more than the study's sessions do. So the unit here is the cluster.

For each cell (a criterion and model pair) every session gets a lean, (answers toward A - answers toward B) /
decided answers, in [-1, 1]. The cluster's mean lean is compared with the mean lean of the study's other
sessions by a two-sample t statistic that uses the *other* sessions' spread for both groups (under the
hypothesis that the cluster's sessions are like any others; a swarm's own spread is zero and must not make
it look more certain than that), floored at the binomial spread of a session of typical length so a study of
perfectly consistent raters does not divide by zero. Two-sided p from Student's t with (others - 1) degrees
of freedom; Bonferroni across the cells tested for the cluster. An honest lab behind one address leans like
the study does and is not flagged; a cohort that truly disagrees with everyone else looks like a swarm, and
a study that expects one can switch the check off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

from app.trust.clusters import Cluster

# A cell maps each session to its (answers toward model A, answers toward model B); ties are not counted.
Answers = Mapping[str, Mapping[int, tuple[int, int]]]


@dataclass(frozen=True)
class LeanTest:
    """One cluster against the study's other sessions on one cell."""

    cluster: Cluster
    cell: str
    sessions: int  # the cluster's sessions with a decided answer in the cell
    rest_sessions: int
    cluster_share: float  # share of the cluster's decided answers toward model A
    rest_share: float  # the same for the other sessions
    p_value: float  # two-sided, this cell alone
    p_adjusted: float  # Bonferroni across the cells tested for this cluster
    flagged: bool


def _leans(rows: Sequence[tuple[int, int]]) -> np.ndarray:
    a = np.array([r[0] for r in rows], dtype=float)
    b = np.array([r[1] for r in rows], dtype=float)
    return (a - b) / (a + b)


def lean_p_value(inside: Sequence[tuple[int, int]], outside: Sequence[tuple[int, int]]) -> float:
    """Two-sided p that sessions ``inside`` lean like sessions ``outside`` (each a (toward A, toward B) count)."""
    li, lo = _leans(inside), _leans(outside)
    k, m = len(li), len(lo)
    if k < 1 or m < 2:
        return math.nan
    spread = float(np.std(lo, ddof=1))
    toward_a = sum(r[0] for r in outside)
    decided = sum(r[0] + r[1] for r in outside)
    share = (toward_a + 1) / (decided + 2)  # Laplace: never exactly 0 or 1
    typical = float(np.median([r[0] + r[1] for r in outside]))
    floor = 2 * math.sqrt(share * (1 - share) / max(typical, 1.0))
    spread = max(spread, floor)
    stat = (float(li.mean()) - float(lo.mean())) / (spread * math.sqrt(1 / k + 1 / m))
    return float(min(1.0, 2 * student_t.sf(abs(stat), df=m - 1)))


def _share(rows: Sequence[tuple[int, int]]) -> float:
    decided = sum(a + b for a, b in rows)
    return sum(a for a, _ in rows) / decided if decided else math.nan


def lean_tests(answers: Answers, clusters: Sequence[Cluster], *, alpha: float, min_sessions: int = 2,
               min_rest: int = 3) -> list[LeanTest]:
    """Every cluster of ``min_sessions``+ sessions tested on every cell where it and ``min_rest`` others answered.

    ``flagged`` is set where the Bonferroni-adjusted p is below ``alpha`` (never when ``alpha`` is 0).
    """
    out: list[LeanTest] = []
    for cluster in clusters:
        if cluster.size < min_sessions:
            continue
        members = set(cluster.sessions)
        tested: list[tuple[str, list[tuple[int, int]], list[tuple[int, int]], float]] = []
        for cell, per_session in answers.items():
            inside = [(a, b) for s, (a, b) in per_session.items() if s in members and a + b > 0]
            outside = [(a, b) for s, (a, b) in per_session.items() if s not in members and a + b > 0]
            if len(inside) < min_sessions or len(outside) < min_rest:
                continue
            tested.append((cell, inside, outside, lean_p_value(inside, outside)))
        for cell, inside, outside, p in tested:
            adjusted = min(1.0, p * len(tested))
            out.append(LeanTest(cluster=cluster, cell=cell, sessions=len(inside), rest_sessions=len(outside),
                                cluster_share=_share(inside), rest_share=_share(outside), p_value=p,
                                p_adjusted=adjusted, flagged=alpha > 0 and adjusted < alpha))
    return out
