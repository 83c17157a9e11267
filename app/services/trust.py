"""Address clusters of a study's sessions, what the collusion check reads, and the leave-one-cluster-out table.

The computations are pure (``app.trust``); this module reads the rows they need. For the sensitivity it
recomputes the verdicts with the same tests and Holm family the dashboard uses (``app.stats.verdict_records``,
the verdict part of ``compute_results``) on the votes without one cluster, so "without this address the criterion
is not significant" is judged exactly as the page judges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Integer, case, func, select
from sqlalchemy.orm import Session

from app.db import read_session_scope
from app.models import Criterion, Evaluator, Pair, StudyModel, Vote, VoteChoice
from app.services.results_data import pseudonym
from app.stats import overall_votes
from app.stats.results import verdict_records
from app.trust.clusters import Cluster, SessionInfo, address_clusters
from app.trust.collusion import Answers
from app.trust.sensitivity import Verdict, influence_order, verdict_changes

if TYPE_CHECKING:  # a type only: results_cache settles QC (app.services.qc) before counting, and qc reads here
    from app.services.results_cache import CachedResults

OVERALL = "overall"


def study_sessions(session: Session, *, study_id: int) -> list[tuple[SessionInfo, str, bool]]:
    """Every session of the study as (what the trust checks see, its public id, whether it is flagged)."""
    rows = session.execute(select(Evaluator.id, Evaluator.ip_hash, Evaluator.user_agent, Evaluator.public_id,
                                  Evaluator.flagged).where(Evaluator.study_id == study_id)).all()
    return [(SessionInfo(id=r.id, address=r.ip_hash, user_agent=r.user_agent), r.public_id, bool(r.flagged))
            for r in rows]


def study_clusters(session: Session, *, study_id: int) -> list[Cluster]:
    return address_clusters(info for info, _, _ in study_sessions(session, study_id=study_id))


# ------------------------------------------------------------------------------------ the collusion check


@dataclass(frozen=True)
class CellInfo:
    """What a cell of ``session_answers`` is about, in words: the criterion's label and the two model names."""

    what: str
    model_a: str
    model_b: str


def session_answers(session: Session, *, study_id: int,
                    sessions: Sequence[int]) -> tuple[Answers, dict[str, CellInfo]]:
    """Per cell (criterion or overall, and model pair) each session's decided answers toward model A and B.

    Normal pairs only (attention checks have a known answer and never enter the results). Returns the answers
    and what each cell is about. Two grouped queries: the database counts, so a study of any size sends back
    one row per session, criterion and model pair.
    """
    wanted = list(sessions)
    if not wanted:
        return {}, {}
    names = dict(session.execute(select(StudyModel.id, StudyModel.name).where(StudyModel.study_id == study_id)).all())
    labels = dict(session.execute(select(Criterion.id, Criterion.label).where(Criterion.study_id == study_id)).all())
    to_a = func.sum(case((VoteChoice.outcome == "a", 1), else_=0))
    to_b = func.sum(case((VoteChoice.outcome == "b", 1), else_=0))
    base = (select(Vote.evaluator_id, VoteChoice.criterion_id, VoteChoice.model_a_id, VoteChoice.model_b_id)
            .join(VoteChoice, VoteChoice.vote_id == Vote.id).join(Pair, Pair.id == Vote.pair_id)
            .where(Vote.study_id == study_id, Pair.kind == "normal", Vote.evaluator_id.in_(wanted)))
    answers: dict[str, dict[int, tuple[int, int]]] = {}
    words: dict[str, CellInfo] = {}

    def put(cell: str, what: str, models: tuple[int, int], evaluator_id: int, a: int, b: int) -> None:
        answers.setdefault(cell, {})[evaluator_id] = (int(a or 0), int(b or 0))
        words[cell] = CellInfo(what, names.get(models[0], str(models[0])), names.get(models[1], str(models[1])))

    for ev, crit, ma, mb, a, b in session.execute(
            base.add_columns(to_a, to_b).group_by(Vote.evaluator_id, VoteChoice.criterion_id,
                                                   VoteChoice.model_a_id, VoteChoice.model_b_id)):
        put(f"{crit}:{ma}:{mb}", str(labels.get(crit, crit)), (ma, mb), ev, a, b)
    # Overall preferred: per vote, the model that won more criteria (app.stats.overall's definition).
    per_vote = (select(Vote.id.label("vote_id"), Vote.evaluator_id, VoteChoice.model_a_id, VoteChoice.model_b_id,
                       to_a.label("a"), to_b.label("b"))
                .join(VoteChoice, VoteChoice.vote_id == Vote.id).join(Pair, Pair.id == Vote.pair_id)
                .where(Vote.study_id == study_id, Pair.kind == "normal", Vote.evaluator_id.in_(wanted))
                .group_by(Vote.id, Vote.evaluator_id, VoteChoice.model_a_id, VoteChoice.model_b_id)).subquery()
    won_a = func.sum(case((per_vote.c.a > per_vote.c.b, 1), else_=0)).cast(Integer)
    won_b = func.sum(case((per_vote.c.b > per_vote.c.a, 1), else_=0)).cast(Integer)
    for ev, ma, mb, a, b in session.execute(
            select(per_vote.c.evaluator_id, per_vote.c.model_a_id, per_vote.c.model_b_id, won_a, won_b)
            .group_by(per_vote.c.evaluator_id, per_vote.c.model_a_id, per_vote.c.model_b_id)):
        put(f"{OVERALL}:{ma}:{mb}", "overall preference", (ma, mb), ev, a, b)
    return answers, words


# ------------------------------------------------------------------------------- leave one cluster out

# Clusters whose removal is tried per results change (each try recomputes the verdicts alone).
MAX_CLUSTERS_CHECKED = 10
# What the verdicts read of a vote; themes, detail levels and sides only feed other tables, and without them
# each recomputation costs a third as much. The baseline is checked against the full results (see below).
_VERDICT_COLUMNS = ("vote_id", "study_id", "criterion", "model_a", "model_b", "winner", "prompt", "evaluator")

CellKey = tuple[str, str, str]  # (criterion or "overall", model A, model B) as the results records name them


def _verdicts(results: dict[str, Any]) -> dict[CellKey, Verdict]:
    return {(str(r["criterion"]), str(r["model_a"]), str(r["model_b"])):
            Verdict(bool(r["significant"]), r.get("leader"))
            for r in [*(results.get("criteria") or []), *(results.get("overall") or [])]}


def _verdicts_of(frame: pd.DataFrame, criteria: list[str]) -> dict[CellKey, Verdict]:
    """The verdicts the results would show for these votes (the same tests and family as the dashboard's)."""
    return _verdicts({"criteria": verdict_records(frame, criteria=criteria, include_flagged=True)})


def _toward(frame: pd.DataFrame, cells: list[CellKey], cluster: np.ndarray,
            n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(answers for each cell's model A, for its model B) per cluster, shape (cells, clusters)."""
    toward_a = np.zeros((len(cells), n_clusters), dtype=np.int64)
    toward_b = np.zeros_like(toward_a)
    if not len(frame) or not cells:
        return toward_a, toward_b
    winner = frame["winner"].astype(str).to_numpy()
    won = np.where(winner == "model_a", frame["model_a"].astype(str).to_numpy(),
                   np.where(winner == "model_b", frame["model_b"].astype(str).to_numpy(), ""))
    counts = pd.DataFrame({"criterion": frame["criterion"].astype(str).to_numpy(), "won": won, "cluster": cluster})
    table = counts[(counts["won"] != "") & (counts["cluster"] >= 0)].groupby(["criterion", "won", "cluster"]).size()
    for (criterion, model, j), n in table.items():
        for i, (c, a, b) in enumerate(cells):
            if c == criterion and model in (a, b):
                (toward_a if model == a else toward_b)[i, int(j)] += int(n)
    return toward_a, toward_b


def cluster_sensitivity(session: Session, *, study_id: int, cached: CachedResults,
                        labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Does one address decide a verdict? The results recomputed without each of the most influential clusters.

    Computed once per cached results (a new vote or flag makes new ones). Keys: ``clusters`` (address clusters
    with votes counted), ``multi_session_clusters``, ``largest`` (sessions in the largest cluster),
    ``checked`` (clusters tried: every multi-session one, then the most one-sided, at most
    ``MAX_CLUSTERS_CHECKED``), ``rows`` (one per results record: ``criterion``, ``model_a``, ``model_b``,
    ``significant``, ``leader`` and ``decided_by``, the clusters whose removal alone changes the verdict, each
    with ``cluster`` label, ``sessions``, ``user_agents``, ``votes`` and what the verdict becomes), and
    ``warning``: a sentence when some cluster decides a verdict, else None.
    """
    return cached.memo("cluster_sensitivity", lambda: _sensitivity(session, study_id, cached, labels or {}))


def _sensitivity(session: Session, study_id: int, cached: CachedResults, labels: dict[str, str]) -> dict[str, Any]:
    res = cached.results
    if not res.get("n_votes"):
        return {"clusters": 0, "multi_session_clusters": 0, "largest": 0, "checked": 0, "rows": [], "warning": None}
    with read_session_scope() as reader:  # never hold (SQLite's) write lock through the recomputations
        sessions = study_sessions(reader, study_id=study_id)
    clusters = address_clusters(info for info, _, _ in sessions)
    index = {s: j for j, c in enumerate(clusters) for s in c.sessions}
    by_pseudonym = {pseudonym(public_id): index[info.id] for info, public_id, _ in sessions}
    frame = cached.frame
    if not cached.include_flagged and "flagged" in frame.columns:
        frame = frame[~frame["flagged"].astype(bool)]
    crits = [str(c) for c in res.get("criteria_keys") or []]
    baseline = _verdicts(res)
    slim = frame[[c for c in _VERDICT_COLUMNS if c in frame.columns]]
    if _verdicts_of(slim, crits) != baseline:
        slim = frame  # a verdict reads another column after all: recompute from every column
    cluster = slim["evaluator"].astype(str).map(by_pseudonym).fillna(-1).astype(int).to_numpy()
    overall = overall_votes(slim, crits) if len(slim) and crits else slim.iloc[0:0]
    ov_cluster = overall["evaluator"].astype(str).map(by_pseudonym).fillna(-1).astype(int).to_numpy()
    cells = list(baseline)
    crit_a, crit_b = _toward(slim, cells, cluster, len(clusters))
    ov_a, ov_b = _toward(overall.assign(criterion=OVERALL), cells, ov_cluster, len(clusters))
    votes = np.bincount(ov_cluster[ov_cluster >= 0], minlength=len(clusters))
    tried = influence_order(crit_a + ov_a, crit_b + ov_b, [c.size for c in clusters], limit=MAX_CLUSTERS_CHECKED)
    without = {j: _verdicts_of(slim[cluster != j], crits) for j in tried}
    changes = verdict_changes(baseline, without)
    rows = []
    for (criterion, a, b), verdict in baseline.items():
        rows.append({"criterion": criterion, "model_a": a, "model_b": b, "significant": verdict.significant,
                     "leader": verdict.leader,
                     "decided_by": [{"cluster": clusters[j].label, "sessions": clusters[j].size,
                                     "user_agents": clusters[j].user_agents, "votes": int(votes[j]),
                                     "significant_without": after.significant, "leader_without": after.leader}
                                    for j, after in changes[(criterion, a, b)]]})
    counted = [c for j, c in enumerate(clusters) if votes[j]]
    return {"clusters": len(counted), "multi_session_clusters": sum(1 for c in counted if c.size > 1),
            "largest": max((c.size for c in counted), default=0), "checked": len(tried),
            "rows": rows, "warning": _warning(rows, labels)}


def _warning(rows: list[dict[str, Any]], labels: dict[str, str]) -> str | None:
    parts = []
    for r in rows:
        if not r["decided_by"]:
            continue
        name = labels.get(r["criterion"], "Overall preferred" if r["criterion"] == OVERALL else r["criterion"])
        first = r["decided_by"][0]
        was = f"significant for {r['leader']}" if r["significant"] else "not significant"
        becomes = (f"significant for {first['leader_without']}" if first["significant_without"]
                   else "not significant")
        parts.append(f"{name} is {was}, but without the {first['sessions']} session(s) of address "
                     f"{first['cluster']} it would be {becomes}")
    if not parts:
        return None
    return ("One address decides " + ("a verdict" if len(parts) == 1 else f"{len(parts)} verdicts") + ": "
            + "; ".join(parts) + ". Look at those sessions before relying on these results.")
