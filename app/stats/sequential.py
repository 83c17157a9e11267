"""Anytime-valid decisions for a pre-registered question: "can the study stop now?", answered honestly.

A researcher who looks at a p-value after every vote and stops when it is small has a false-positive rate far
above alpha (Armitage, McPherson & Rowe 1969: about 1 in 4 at alpha = 5% with many looks; the test below
shows it). A *confidence sequence* covers the true share at every vote count at once, so the decision it
supports holds however often anyone looks and whenever the study stops.

**The question** (a ``Question``, fixed in the study's plan): per criterion, either *non-inferiority* of a named
model against a reference with a margin m ("the fast model's preference share is not below 45%": decided
``non-inferior`` when the whole sequence lies above m, ``inferior`` when it lies below m) or *superiority*
(``superior`` above 1/2, ``inferior`` below). Ties enter as the plan says: ``drop`` (the share among decided
votes, a tie counts for neither model: the rule of ``app.stats.clustered``) or ``half`` (a tie is half a win, the
share among all votes).

**The boundary**: the two-sided normal-mixture boundary of Robbins (1970) in the form of Howard, Ramdas,
McAuliffe & Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist.
49(2), Sec. 3.2 / eq. (14): for a sum S_t with variance process V_t, ``|S_t| < sqrt((V_t + rho) log((V_t + rho)
/ (rho alpha^2)))`` for all t with probability 1 - alpha. The mixture precision rho makes the boundary tightest
near a planned variance ``v_opt`` (their eq. (15) approximation, the one the ``confseq`` package uses).

**The variance, and why clustering is handled**: with an estimated variance this is the *asymptotic* confidence
sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2024), "Time-uniform central limit theory and
asymptotic confidence sequences", Ann. Statist. 52(6) (arXiv 2103.06476), Thm 2.2. Votes are not independent
(prompts and raters), so V_t is the two-way cluster-robust variance of ``sum(a - r d)`` by prompt and by rater,
exactly as ``app.stats.clustered`` computes it for the fixed-sample verdict (Cameron, Gelbach & Miller 2011; the
same sums, factors G/(G-1) and fallback), at the running estimate r (the Wald form; see ``score_path`` for why
not at the threshold). Waudby-Smith et al. prove the asymptotic CS for independent units; plugging in the
cluster-robust variance treats clusters as the units, which is the standard asymptotics of clustered inference
but not a theorem for the time-uniform case. ``bench/sequential.py`` therefore measures the type-I error under
prompt and rater clustering with a look after every vote, and the results live in BENCHMARKS.md. A decision
needs ``MIN_PROMPTS`` prompts and ``MIN_RATERS`` raters first: a cluster-robust variance from a handful of
clusters is too noisy for an asymptotic boundary (the fixed-sample page labels such intervals approximate for
the same reason).

**Two stages** (``Design``, ``study_decisions``): the plan's alpha is split between the sequence (which may stop
at any vote) and one clustered fixed-sample test at the vote budget for what is still open; the budget is the
fixed-sample size at the final alpha, so the worst case stays near the fixed design (Haybittle 1971, Peto et
al. 1976 split alpha this way between early looks and the final analysis).

**Several criteria**: alpha is family-wise over the plan's criteria (Bonferroni: each sequence at alpha / k),
so "every planned criterion decided" is wrong somewhere with probability at most alpha.

What fell short: the ``confseq`` package (Howard & Waudby-Smith) has these boundaries, but its sdist needs
Boost headers to build and it has no wheels for this Python, so the boundary (three lines) is written here;
the tests check it against values the package computed (``tests/app/stats/test_sequential.py``) and against
a direct numerical integration of the mixture martingale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import norm

from app.stats.clustered import Clustering, share_inference

Kind = Literal["non_inferiority", "superiority"]
TiesRule = Literal["drop", "half"]
Decision = Literal["non-inferior", "inferior", "superior", "not yet"]

MIN_PROMPTS = 20  # clusters on the prompt dimension before any decision (clustered.APPROXIMATE_BELOW)
MIN_RATERS = 10  # and on the rater dimension


@dataclass(frozen=True)
class Question:
    """One criterion's pre-registered hypothesis about ``model``'s preference share against ``reference``."""

    criterion: str
    model: str
    reference: str
    kind: Kind = "non_inferiority"
    margin: float = 0.45  # the share not to fall below (non-inferiority); 1/2 for superiority

    @property
    def threshold(self) -> float:
        return self.margin if self.kind == "non_inferiority" else 0.5


# ----------------------------------------------------------------------------------------------------------------
# The boundary (Howard et al. 2021)

def mixture_rho(v_opt: float, alpha: float) -> float:
    """Mixture precision that makes the two-sided boundary near-tightest at variance ``v_opt``.

    Howard et al. (2021), eq. (15)'s approximation: rho = v_opt / (2 log(1/alpha) + log(1 + 2 log(1/alpha))), the
    form ``confseq.boundaries.normal_mixture_bound`` uses for its two-sided bound."""
    if v_opt <= 0 or not 0 < alpha < 1:
        raise ValueError("v_opt must be positive and alpha in (0, 1)")
    ell = 2 * math.log(1 / alpha)
    return v_opt / (ell + math.log(1 + ell))


def mixture_boundary(v: np.ndarray | float, alpha: float, rho: float) -> np.ndarray:
    """Two-sided normal-mixture boundary: |S_t| stays below it for all t with probability >= 1 - alpha."""
    v = np.maximum(np.asarray(v, dtype=float), 0.0)
    return np.sqrt((v + rho) * np.log((v + rho) / (rho * alpha * alpha)))


# ----------------------------------------------------------------------------------------------------------------
# The running statistic, after every vote

def outcome_columns(winner: np.ndarray, model_a_is_subject: np.ndarray, ties: TiesRule
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(a, d) per row: a = the subject's win (or half a tie), d = the row counts in the share's denominator."""
    win = np.where(model_a_is_subject, winner == "model_a", winner == "model_b").astype(float)
    tie = (winner == "tie").astype(float)
    if ties == "drop":
        return win, 1.0 - tie
    if ties == "half":
        return win + 0.5 * tie, np.ones(len(winner))
    raise ValueError(f"unknown ties rule {ties!r}: use 'drop' or 'half'")


def _running_sums(a: np.ndarray, d: np.ndarray, codes: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """After each row t, over the clusters g seen so far: sum A_g^2, sum A_g D_g, sum D_g^2, and their number.

    Adding (a, d) to a cluster with sums (A, D) adds 2 A a + a^2 to A^2 (and so on), so each path is a cumsum."""
    a_before = pd.Series(a).groupby(codes).cumsum().to_numpy() - a
    d_before = pd.Series(d).groupby(codes).cumsum().to_numpy() - d
    first = np.zeros(len(codes), dtype=bool)
    first[np.unique(codes, return_index=True)[1]] = True
    return (np.cumsum(2 * a_before * a + a * a), np.cumsum(a_before * d + d_before * a + a * d),
            np.cumsum(2 * d_before * d + d * d), np.cumsum(first))


def _factor(g: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(g > 1, g / np.maximum(g - 1, 1), np.nan)


def _at(sums: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], r: np.ndarray) -> np.ndarray:
    """G/(G-1) sum over clusters of (A_g - r D_g)^2, elementwise in r."""
    s_aa, s_ad, s_dd, g = sums
    return np.asarray(_factor(g) * (s_aa - 2 * r * s_ad + r * r * s_dd))


@dataclass(frozen=True)
class Path:
    """The statistic for H0: share = r0 after each counted row (rows with d > 0, in arrival order)."""

    row: np.ndarray  # index of the row in the input (so a stop maps back to a vote)
    s: np.ndarray  # sum(a - r0 d)
    v: np.ndarray  # its two-way cluster-robust variance at the running estimate (nan before two clusters)
    decided: np.ndarray  # sum(d)
    estimate: np.ndarray  # sum(a) / sum(d)
    prompts: np.ndarray  # clusters seen so far per dimension (the row count when a dimension is absent)
    raters: np.ndarray


def score_path(a: np.ndarray, d: np.ndarray, clustering: Clustering, r0: float) -> Path:
    """``sum(a - r0 d)`` and its two-way clustered variance after every counted row.

    The variance is ``app.stats.clustered``'s (the same sums, factors G/(G-1), the fallback to the larger one-way
    variance) of ``sum(a - r d)`` at the running estimate r (the Wald form, clustered's ``se``): centred, as the
    asymptotic CS of Waudby-Smith et al. uses the running sample variance. Centred at r0 instead (the score form
    of the fixed-sample interval), every cluster's sum would carry the drift (m_g (r - r0))^2 under an
    alternative, and with prompts that collect ever more votes the statistic could never grow past about the
    number of prompts. The last value equals ``clustered.sum_variance`` of ``a - r d`` (checked in the tests);
    computing the path incrementally costs one pass instead of one clustered fit per look."""
    keep = np.flatnonzero(np.asarray(d) > 0)
    a, d = np.asarray(a, dtype=float)[keep], np.asarray(d, dtype=float)[keep]
    dims = {name: c[keep] for name, c in (("prompt", clustering.prompt), ("rater", clustering.rater))
            if c is not None}
    if not dims:
        dims = {"vote": np.arange(len(a))}
    if len(dims) == 2:
        dims["crossed"] = dims["prompt"] * (int(dims["rater"].max(initial=-1)) + 1) + dims["rater"]
    sums = {name: _running_sums(a, d, c) for name, c in dims.items()}
    big_d = np.cumsum(d)
    est = np.cumsum(a) / big_d
    var = {name: _at(s, est) for name, s in sums.items()}
    if "crossed" in var:
        with np.errstate(invalid="ignore"):
            two_way = var["prompt"] + var["rater"] - np.nan_to_num(var["crossed"], nan=0.0)
            v = np.where(two_way > 0, two_way, np.fmax(var["prompt"], var["rater"]))
    else:
        v = next(iter(var.values()))
    count = np.arange(1, len(a) + 1)
    return Path(keep, np.cumsum(a - r0 * d), v, big_d, est,
                sums["prompt"][3] if "prompt" in sums else count,
                sums["rater"][3] if "rater" in sums else count)


# ----------------------------------------------------------------------------------------------------------------
# Planning: the variance a study expects, the votes the rule needs, the fixed-sample comparison

def planned_decided(assumed: float, threshold: float, *, alpha: float, power: float, deff: float = 1.0) -> int:
    """Decided votes by which the sequential rule crosses with probability ~``power`` if the share is ``assumed``.

    Normal approximation: at n votes S ~ N(n delta, n sigma^2) with sigma^2 = deff * assumed (1 - assumed); the
    boundary is crossed by n with probability ~power when n delta >= boundary(n sigma^2) + z_power sqrt(n sigma^2).
    rho is tuned to that n (a fixed point, found in a few steps)."""
    delta = abs(assumed - threshold)
    if delta == 0:
        raise ValueError("the assumed share equals the threshold: no number of votes decides")
    sigma2 = deff * assumed * (1 - assumed)
    n = fixed_sample_decided(assumed, threshold, alpha=alpha, power=power, deff=deff)
    for _ in range(50):
        rho = mixture_rho(n * sigma2, alpha)
        lo, hi = 1.0, 1e9
        while hi - lo > 0.5:
            mid = (lo + hi) / 2
            need = float(mixture_boundary(mid * sigma2, alpha, rho)) + norm.ppf(power) * math.sqrt(mid * sigma2)
            lo, hi = (mid, hi) if mid * delta < need else (lo, mid)
        if abs(hi - n) < 1:
            break
        n = hi
    return int(math.ceil(hi))


def fixed_sample_decided(assumed: float, threshold: float, *, alpha: float, power: float,
                         deff: float = 1.0) -> float:
    """The fixed-sample design with the same error rates: n = deff p(1-p) ((z_{1-alpha/2} + z_power) / delta)^2.

    A two-sided interval at 1 - alpha (one-sided alpha / 2 per direction, as the sequence), evaluated once at n."""
    delta = abs(assumed - threshold)
    return float(deff * assumed * (1 - assumed) * ((norm.isf(alpha / 2) + norm.ppf(power)) / delta) ** 2)


# ----------------------------------------------------------------------------------------------------------------
# The decision for one criterion

@dataclass(frozen=True)
class SequentialResult:
    """What the dashboard shows for one criterion."""

    question: Question
    alpha: float  # this criterion's share of the family-wise alpha
    n_votes: int  # rows of this criterion (ties included)
    n_decided: int  # rows counted in the share
    estimate: float | None
    cs: tuple[float, float] | None  # the confidence sequence at the current votes (None before the minimum)
    decision: Decision
    decided_at: int | None  # the vote count (rows of this criterion) at which the decision was first reached
    ready: bool  # enough prompts and raters for a decision
    expected_more: int | None  # votes still needed, expected (None when decided or unknown)
    n_prompts: int = 0
    n_raters: int = 0
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        q = self.question
        return {"criterion": q.criterion, "model": q.model, "reference": q.reference, "kind": q.kind,
                "margin": q.margin, "threshold": q.threshold, "alpha": self.alpha, "n_votes": self.n_votes,
                "n_decided": self.n_decided, "estimate": self.estimate,
                "cs": list(self.cs) if self.cs is not None else None, "decision": self.decision,
                "decided": self.decision != "not yet", "decided_at": self.decided_at, "ready": self.ready,
                "expected_more": self.expected_more, "n_prompts": self.n_prompts, "n_raters": self.n_raters,
                "notes": list(self.notes)}


def _first_crossing(path: Path, alpha: float, rho: float, min_prompts: int, min_raters: int
                    ) -> tuple[int | None, int]:
    """(index into the path of the first crossing, its sign) or (None, 0)."""
    ready = (path.prompts >= min_prompts) & (path.raters >= min_raters) & np.isfinite(path.v)
    with np.errstate(invalid="ignore"):
        crossed = ready & (path.s * path.s >= mixture_boundary(np.nan_to_num(path.v), alpha, rho) ** 2)
    hit = np.flatnonzero(crossed & (path.s != 0))
    if hit.size == 0:
        return None, 0
    return int(hit[0]), int(np.sign(path.s[hit[0]]))


def confidence_sequence(path: Path, *, alpha: float, rho: float) -> tuple[float, float] | None:
    """The shares r the boundary does not reject at the path's last vote: est +- boundary(V) / D.

    With the variance at the estimate this is the interval the decision reads: the threshold lies outside it
    exactly when the path has crossed there."""
    if not len(path.s) or not np.isfinite(path.v[-1]):
        return None
    half = float(mixture_boundary(path.v[-1], alpha, rho)) / float(path.decided[-1])
    est = float(path.estimate[-1])
    return max(0.0, est - half), min(1.0, est + half)


def _expected_more(est: float, n_decided: int, v: float, *, question: Question, alpha: float, rho: float,
                   assumed: float, decided_share: float) -> int | None:
    """Votes still needed, expected: the decided votes at which the drift reaches the boundary if the share is
    the current estimate (never closer to the threshold than the plan's assumed share, so two equal-looking
    models do not yield a number from noise), the per-vote variance as measured so far (design effect included),
    ties at the share seen so far."""
    r0 = question.threshold
    delta = max(abs(est - r0), abs(assumed - r0))
    if delta == 0 or n_decided == 0 or not math.isfinite(v) or decided_share <= 0:
        return None
    sigma2 = max(v / n_decided, 1e-9)
    lo, hi = float(n_decided), float(n_decided) * 2 + 10
    while hi * delta < float(mixture_boundary(hi * sigma2, alpha, rho)):
        hi *= 2
        if hi > 1e9:
            return None
    while hi - lo > 0.5:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * delta < float(mixture_boundary(mid * sigma2, alpha, rho)) else (lo, mid)
    return max(0, int(math.ceil((hi - n_decided) / decided_share)))


def decide(frame: pd.DataFrame, question: Question, *, alpha: float, rho: float, ties: TiesRule = "drop",
           assumed: float | None = None, min_prompts: int = MIN_PROMPTS,
           min_raters: int = MIN_RATERS) -> SequentialResult:
    """The decision for one criterion from its votes in arrival order (``submitted_at`` then ``vote_id`` when
    present). ``alpha`` is this criterion's share of the plan's alpha; ``rho`` the plan's mixture precision."""
    rows = _vote_order(_rows(frame, question))
    winner = rows["winner"].astype(str).to_numpy()
    a, d = outcome_columns(winner, (rows["model_a"] == question.model).to_numpy(), ties)
    clustering = Clustering.of(rows.reset_index(drop=True))
    path = score_path(a, d, clustering, question.threshold)
    n_decided = int(d.sum())
    est = float(a.sum() / d.sum()) if n_decided else None
    hit, sign = _first_crossing(path, alpha, rho, min_prompts, min_raters)
    ready = bool(len(path.s)) and bool(path.prompts[-1] >= min_prompts and path.raters[-1] >= min_raters)
    notes = []
    if not ready:
        notes.append(f"a decision needs votes on at least {min_prompts} prompts from at least {min_raters} raters "
                     "(a clustered variance from fewer is too noisy to trust)")
    decision: Decision = "not yet"
    decided_at = None
    if hit is not None:
        decided_at = int(path.row[hit]) + 1
        if sign > 0:
            decision = "non-inferior" if question.kind == "non_inferiority" else "superior"
        else:
            decision = "inferior"
    cs = confidence_sequence(path, alpha=alpha, rho=rho) if ready else None
    more = None
    if decision == "not yet" and est is not None and len(path.v) and np.isfinite(path.v[-1]):
        more = _expected_more(est, n_decided, float(path.v[-1]), question=question, alpha=alpha, rho=rho,
                              assumed=question.threshold + 0.05 if assumed is None else assumed,
                              decided_share=n_decided / len(rows))
    return SequentialResult(question, alpha, int(len(rows)), n_decided, est, cs, decision, decided_at, ready, more,
                            int(path.prompts[-1]) if len(path.prompts) else 0,
                            int(path.raters[-1]) if len(path.raters) else 0, notes)


# ----------------------------------------------------------------------------------------------------------------
# The study: every planned criterion, the budget, "the study can stop"

EARLY_SHARE = 0.2  # of alpha spent on the anytime-valid sequence; the rest on the one final test at the budget
TUNE_AT = 0.25  # the sequence is made tightest at this share of the budget (where stopping early pays most)


@dataclass(frozen=True)
class Design:
    """The error rates and sizes a plan fixes, per criterion (alpha already split over the k criteria).

    Two stages share alpha (a union bound, so the total error is at most alpha however often anyone looks):
    ``alpha_early`` for the confidence sequence, which may stop a criterion at any vote, and ``alpha_final`` for
    one fixed-sample test (``app.stats.clustered``, the same clustering) at the vote budget. This is the idea
    of Haybittle (1971) and Peto et al. (1976) — a stringent early boundary, nearly all of alpha kept for the
    final analysis — with the early boundary valid under continuous monitoring instead of at scheduled looks.
    It is what keeps the worst case near the fixed-sample design: the budget is the fixed-sample size at
    ``alpha_final``, so no study runs much longer than a fixed design, and a clear effect still stops early."""

    alpha_early: float
    alpha_final: float
    rho: float
    budget_decided: int  # decided votes per criterion the budget was sized for


def plan_design(*, alpha: float, power: float, assumed: float, threshold: float, n_questions: int,
                early_share: float = EARLY_SHARE, deff: float = 1.0) -> Design:
    """The design a plan implies, from the plan alone (rho must never be tuned on the data)."""
    if not 0 < alpha < 1 or not 0 < power < 1 or not 0 < early_share < 1:
        raise ValueError("alpha, power and the early share must lie strictly between 0 and 1")
    per = alpha / max(n_questions, 1)
    a_early, a_final = per * early_share, per * (1 - early_share)
    n_final = fixed_sample_decided(assumed, threshold, alpha=a_final, power=power, deff=deff)
    rho = mixture_rho(TUNE_AT * n_final * deff * assumed * (1 - assumed), a_early)
    return Design(a_early, a_final, rho, int(math.ceil(n_final)))


def budget_votes(design: Design, *, tie_share: float) -> int:
    """Total votes (ties included) a criterion needs for the final test's power: the plan's default budget."""
    return int(math.ceil(design.budget_decided / max(1.0 - tie_share, 0.05)))


def _final(frame: pd.DataFrame, question: Question, *, alpha: float, ties: TiesRule) -> dict[str, Any]:
    """The one fixed-sample test at the budget: the clustered score interval at 1 - alpha against the threshold."""
    rows = _rows(frame, question)
    a, d = outcome_columns(rows["winner"].astype(str).to_numpy(), (rows["model_a"] == question.model).to_numpy(),
                           ties)
    inf = share_inference(a, d, np.zeros(len(rows), dtype=np.int64), 1, Clustering.of(rows.reset_index(drop=True)),
                          confidence=1 - alpha)
    lo, hi = float(inf.lo[0]), float(inf.hi[0])
    if math.isnan(lo) or inf.df[0] <= 0:
        decision = "inconclusive"
    elif lo > question.threshold:
        decision = "non-inferior" if question.kind == "non_inferiority" else "superior"
    elif hi < question.threshold:
        decision = "inferior"
    else:
        decision = "inconclusive"
    ci = None if math.isnan(lo) else [lo, hi]
    return {"decision": decision, "ci": ci, "approximate": bool(inf.approximate[0])}


def _rows(frame: pd.DataFrame, question: Question) -> pd.DataFrame:
    return frame[(frame["criterion"] == question.criterion)
                 & (((frame["model_a"] == question.model) & (frame["model_b"] == question.reference))
                    | ((frame["model_a"] == question.reference) & (frame["model_b"] == question.model)))]


def _vote_order(frame: pd.DataFrame) -> pd.DataFrame:
    order = [c for c in ("submitted_at", "vote_id") if c in frame.columns]
    return frame.sort_values(order, kind="stable") if order else frame


def _first_votes(frame: pd.DataFrame, budget: int) -> pd.DataFrame:
    """The rows of the study's first ``budget`` votes (the final analysis never sees votes past the budget)."""
    if "vote_id" in frame.columns:
        ids = pd.unique(frame["vote_id"])[:budget]
        return frame[frame["vote_id"].isin(ids)]
    per = max(int(frame["criterion"].nunique()), 1)
    return frame.iloc[: budget * per]


def study_decisions(frame: pd.DataFrame, questions: list[Question], *, alpha: float, power: float,
                    budget: int, ties: TiesRule = "drop", assumed: dict[str, float] | None = None,
                    early_share: float = EARLY_SHARE, min_prompts: int = MIN_PROMPTS,
                    min_raters: int = MIN_RATERS) -> dict[str, Any]:
    """Per planned criterion the decision; and whether the study can stop (every criterion decided, or the vote
    budget spent, when the final test decides what the sequence left open). ``budget`` counts votes (a vote
    answers every criterion; rows / criteria without vote ids); ``assumed`` is the share the power is planned
    at, per criterion (default: 5 points beyond the threshold)."""
    if not questions:
        return {"criteria": [], "can_stop": False, "reason": "the plan asks no question", "n_votes": 0,
                "budget": budget, "method": METHOD}
    frame = _vote_order(frame)
    if "vote_id" in frame.columns:
        n_votes = int(frame["vote_id"].nunique())
    else:
        n_votes = len(frame) // max(int(frame["criterion"].nunique()), 1) if len(frame) else 0
    spent = n_votes >= budget
    upto = _first_votes(frame, budget) if spent else frame
    k = len(questions)
    rows: list[dict[str, Any]] = []
    for q in questions:
        share = (assumed or {}).get(q.criterion, q.threshold + 0.05)
        design = plan_design(alpha=alpha, power=power, assumed=share, threshold=q.threshold, n_questions=k,
                             early_share=early_share)
        rec = decide(upto, q, alpha=design.alpha_early, rho=design.rho, ties=ties, assumed=share,
                     min_prompts=min_prompts, min_raters=min_raters).record()
        rec["alpha_final"], rec["stage"], rec["final"] = design.alpha_final, "sequence", None
        if rec["decided"]:
            rec["stage"] = "sequence"
        elif spent:
            rec["final"] = _final(upto, q, alpha=design.alpha_final, ties=ties)
            rec["decision"], rec["decided"], rec["stage"] = rec["final"]["decision"], True, "final"
            rec["decided_at"] = int(len(_rows(upto, q)))
        rows.append(rec)
    all_decided = all(r["decided"] for r in rows)
    left = max(budget - n_votes, 0)
    for r in rows:
        if r["expected_more"] is not None and r["expected_more"] > left and not r["decided"]:
            r["notes"].append(f"the sequence is expected to need more than the {left} votes left: the final test at "
                              "the budget will decide")
    reason = (f"the vote budget ({budget}) is spent; the final test decided what the sequence left open" if spent
              else "every planned criterion is decided" if all_decided else None)
    return {"criteria": rows, "can_stop": all_decided or spent, "reason": reason, "n_votes": n_votes,
            "budget": budget, "budget_left": left, "alpha": alpha, "power": power, "ties": ties,
            "early_share": early_share, "method": METHOD}


METHOD = ("Two stages share the plan's alpha (a union bound, as Haybittle 1971 and Peto et al. 1976 split it). Early: "
          "an anytime-valid confidence sequence per criterion, the two-sided normal-mixture boundary (Robbins 1970; "
          "Howard, Ramdas, McAuliffe & Sekhon 2021, Ann. Statist. 49(2)) on the running sum of (win - threshold) "
          "with the two-way cluster-robust variance by prompt and rater (Cameron, Gelbach & Miller 2011) - the "
          "asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2024, Ann. Statist. "
          "52(6)); it holds however often anyone looks, and decides the first time it leaves the threshold once "
          "the criterion has votes on enough prompts from enough raters. Final: at the vote budget, one clustered "
          "fixed-sample test (the dashboard's own method) with the rest of alpha decides what is still open. "
          "Alpha is split evenly over the planned criteria (Bonferroni).")
