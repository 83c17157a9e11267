"""The study's plan: its question fixed before the first vote, frozen with a hash, amended only visibly.

A plan (``StudyPlan.spec``) says, per criterion, the hypothesis (non-inferiority of a named model against a
reference with a margin, or superiority), the share the power is planned at, and for the study alpha, power, the
vote budget, how ties enter, and whether the invite link closes itself once the study can stop. The default is
the seed's question: is the fast (first) model's preference share not below 45%, on every criterion.

- A draft may be edited until the study opens; ``freeze_draft`` (called when the study opens) freezes it: a
  timestamp, the number of votes so far (0 for a plan stated in time) and a SHA-256 over the canonical JSON of
  the plan, the study, the version, the time and the previous version's hash.
- A frozen plan is never changed. Saving again creates version n + 1 with a required reason, frozen at once and
  chained to the hash before it; the page and the report show every version, so an amendment made after looking
  cannot pass for the original question.
- ``sequential_view`` applies the current plan's rule (``app.stats.sequential``) to the votes, and closes the
  study (its invite link) when the plan asks for it and the study can stop.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Study, StudyPlan, Vote
from app.services.results_cache import CachedResults
from app.stats.sequential import EARLY_SHARE, Question, budget_votes, plan_design, study_decisions

KINDS = ("non_inferiority", "superiority")
TIES = ("drop", "half")
DEFAULT_MARGIN = 0.45  # the seed's question: the fast model's preference share not below 45%
DEFAULT_TIE_SHARE = 0.2  # ties expected when sizing the default budget (the synthetic and pilot studies' rate)


class PlanError(ValueError):
    """A plan that cannot be saved; the message says what to change. Nothing was stored."""


@dataclass(frozen=True)
class PlanVersion:
    version: int
    spec: dict[str, Any]
    sha256: str | None
    previous_sha256: str | None
    frozen_at: datetime | None
    votes_at_freeze: int | None
    reason: str

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None


def _criteria(study: Study) -> list[str]:
    return [c.key for c in study.criteria]


def _models(study: Study) -> list[str]:
    return [m.name for m in study.models]


def default_assumed(kind: str, margin: float) -> float:
    """The share the power is planned at: "no worse" (1/2) for non-inferiority, 60% for superiority
    (``app.stats.power.SMALLEST_EFFECT``)."""
    return 0.5 if kind == "non_inferiority" else 0.6


def default_budget(*, alpha: float, power: float, questions: list[dict[str, Any]]) -> int:
    """Votes for the final test's power on the hardest question, ties at ``DEFAULT_TIE_SHARE``."""
    sizes = [budget_votes(plan_design(alpha=alpha, power=power, assumed=q["assumed"], threshold=_threshold(q),
                                      n_questions=len(questions)), tie_share=DEFAULT_TIE_SHARE) for q in questions]
    return max(sizes) if sizes else 0


def _threshold(q: dict[str, Any]) -> float:
    return float(q["margin"]) if q["kind"] == "non_inferiority" else 0.5


def default_spec(study: Study) -> dict[str, Any]:
    """The seed's question for this study: non-inferiority of the first model against the second, every
    criterion, margin 45%, alpha 5%, power 80%, ties dropped, the budget that power needs."""
    models = _models(study)
    model, reference = (models + ["", ""])[:2]
    questions = [{"criterion": c, "kind": "non_inferiority", "model": model, "reference": reference,
                  "margin": DEFAULT_MARGIN, "assumed": default_assumed("non_inferiority", DEFAULT_MARGIN)}
                 for c in _criteria(study)]
    spec = {"questions": questions, "alpha": 0.05, "power": 0.8, "ties": "drop", "early_share": EARLY_SHARE,
            "close_when_done": False}
    spec["budget"] = default_budget(alpha=0.05, power=0.8, questions=questions) if questions else 0
    return spec


def _number(raw: Any, label: str, lo: float, hi: float, errors: list[str]) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        errors.append(f"{label} must be a number (got {raw!r}).")
        return math.nan
    if not lo < value < hi:
        errors.append(f"{label} must lie strictly between {lo:g} and {hi:g} (got {value:g}).")
    return value


def validate_spec(study: Study, raw: dict[str, Any]) -> dict[str, Any]:
    """A clean spec from the admin form's fields (or the API's JSON), or ``PlanError`` listing every problem.

    Fields: kind, model, reference, margin (a share, 0-1), alpha, power, budget (votes), ties, criteria (keys;
    empty = all), assumed (optional), close_when_done."""
    errors: list[str] = []
    models, criteria = _models(study), _criteria(study)
    kind = str(raw.get("kind") or "non_inferiority")
    if kind not in KINDS:
        errors.append(f"Unknown hypothesis '{kind}': use one of {', '.join(KINDS)}.")
    model, reference = str(raw.get("model") or ""), str(raw.get("reference") or "")
    for label, name in (("The model", model), ("The reference", reference)):
        if name not in models:
            errors.append(f"{label} '{name}' is not one of the study's models ({', '.join(models)}).")
    if model and model == reference:
        errors.append("The model and the reference must differ.")
    margin = _number(raw.get("margin", DEFAULT_MARGIN), "The margin", 0.0, 1.0, errors)
    if kind == "non_inferiority" and margin == margin and margin >= 0.5:
        errors.append("A non-inferiority margin is a share below 50% (e.g. 0.45); for 'better than' choose "
                      "superiority.")
    alpha = _number(raw.get("alpha", 0.05), "Alpha", 0.0, 0.5, errors)
    power = _number(raw.get("power", 0.8), "Power", 0.0, 1.0, errors)
    ties = str(raw.get("ties") or "drop")
    if ties not in TIES:
        errors.append(f"Unknown tie rule '{ties}': use 'drop' (a tie counts for neither model) or 'half'.")
    chosen = [str(c) for c in (raw.get("criteria") or []) if str(c)] or criteria
    unknown = [c for c in chosen if c not in criteria]
    if unknown:
        errors.append(f"Unknown criteria: {', '.join(unknown)} (the study has {', '.join(criteria)}).")
    threshold = margin if kind == "non_inferiority" else 0.5
    assumed_raw = raw.get("assumed")
    assumed = (default_assumed(kind, margin) if assumed_raw in (None, "")
               else _number(assumed_raw, "The planned share", 0.0, 1.0, errors))
    if assumed == assumed and threshold == threshold and assumed <= threshold:
        errors.append(f"The share the power is planned at ({assumed:g}) must lie above the threshold "
                      f"({threshold:g}): the power is to show the model clears it.")
    if errors:
        raise PlanError(" ".join(errors))
    questions = [{"criterion": c, "kind": kind, "model": model, "reference": reference, "margin": margin,
                  "assumed": assumed} for c in chosen]
    budget_raw = raw.get("budget")
    if budget_raw in (None, ""):
        budget = default_budget(alpha=alpha, power=power, questions=questions)
    else:
        try:
            budget = int(str(budget_raw))
        except ValueError:
            raise PlanError(f"The vote budget must be a whole number of votes (got {budget_raw!r}).") from None
        if budget < 1:
            raise PlanError("The vote budget must be at least 1 vote.")
    return {"questions": questions, "alpha": alpha, "power": power, "ties": ties, "budget": budget,
            "early_share": EARLY_SHARE, "close_when_done": bool(raw.get("close_when_done"))}


def _hash(study_id: int, version: int, spec: dict[str, Any], frozen_at: datetime, previous: str | None,
          votes: int) -> str:
    canonical = json.dumps({"study_id": study_id, "version": version, "spec": spec, "frozen_at": frozen_at.isoformat(),
                            "previous_sha256": previous, "votes_at_freeze": votes}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def verify(plan: PlanVersion, study_id: int) -> bool:
    """Whether a frozen plan's hash matches its content (a report reader can recompute it the same way)."""
    if plan.frozen_at is None or plan.sha256 is None:
        return False
    frozen_at = plan.frozen_at if plan.frozen_at.tzinfo else plan.frozen_at.replace(tzinfo=UTC)
    return _hash(study_id, plan.version, plan.spec, frozen_at, plan.previous_sha256,
                 plan.votes_at_freeze or 0) == plan.sha256


def _rows(session: Session, study_id: int) -> list[StudyPlan]:
    return list(session.scalars(select(StudyPlan).where(StudyPlan.study_id == study_id)
                                .order_by(StudyPlan.version)))


def _version(row: StudyPlan) -> PlanVersion:
    return PlanVersion(row.version, row.spec, row.sha256, row.previous_sha256, row.frozen_at, row.votes_at_freeze,
                       row.reason)


def plan_history(session: Session, *, study_id: int) -> list[PlanVersion]:
    """Every version, oldest first (the last is the plan in force)."""
    return [_version(r) for r in _rows(session, study_id)]


def _votes(session: Session, study_id: int) -> int:
    return int(session.scalar(select(func.count(Vote.id)).where(Vote.study_id == study_id)) or 0)


def _freeze(session: Session, row: StudyPlan, previous: str | None) -> None:
    row.frozen_at = datetime.now(UTC).replace(microsecond=0)
    row.votes_at_freeze = _votes(session, row.study_id)
    row.previous_sha256 = previous
    row.sha256 = _hash(row.study_id, row.version, row.spec, row.frozen_at, previous, row.votes_at_freeze)


def save_plan(session: Session, *, study_id: int, raw: dict[str, Any], reason: str = "") -> PlanVersion:
    """Store the plan from ``raw`` (validated): edit the draft of a draft study, or amend a frozen plan.

    An open or closed study's plan is frozen at once (its votes may already be in: ``votes_at_freeze`` says how
    many); an amendment needs a reason."""
    study = session.get(Study, study_id)
    if study is None:
        raise PlanError(f"There is no study with id {study_id}.")
    spec = validate_spec(study, raw)
    rows = _rows(session, study_id)
    last = rows[-1] if rows else None
    if last is not None and last.frozen_at is None:
        last.spec = spec
        row = last
    else:
        if last is not None and not reason.strip():
            raise PlanError("The plan is frozen: say why it is amended (the reason is shown beside both versions).")
        row = StudyPlan(study_id=study_id, version=(last.version + 1) if last else 1, spec=spec,
                        reason=reason.strip())
        session.add(row)
    if study.status != "draft" and row.frozen_at is None:
        _freeze(session, row, last.sha256 if last is not None and last is not row else None)
    session.flush()
    return _version(row)


def freeze_draft(session: Session, *, study_id: int) -> PlanVersion | None:
    """Freeze the draft plan when the study opens (nothing to do without one, or when it is already frozen)."""
    rows = _rows(session, study_id)
    if not rows or rows[-1].frozen_at is not None:
        return None
    previous = rows[-2].sha256 if len(rows) > 1 else None
    _freeze(session, rows[-1], previous)
    session.flush()
    return _version(rows[-1])


def questions_of(spec: dict[str, Any]) -> list[Question]:
    return [Question(q["criterion"], q["model"], q["reference"], q["kind"], float(q["margin"]))
            for q in spec.get("questions", [])]


def decisions(frame: pd.DataFrame, spec: dict[str, Any]) -> dict[str, Any]:
    """The plan's rule on a vote frame (the one call, so the dashboard, results.json and the report agree)."""
    return study_decisions(frame, questions_of(spec), alpha=float(spec["alpha"]), power=float(spec["power"]),
                           budget=int(spec["budget"]), ties=spec.get("ties", "drop"),
                           assumed={q["criterion"]: float(q["assumed"]) for q in spec.get("questions", [])},
                           early_share=float(spec.get("early_share", EARLY_SHARE)))


def sequential_view(session: Session, *, study: Study, cached: CachedResults) -> dict[str, Any] | None:
    """The plan in force, its history and decisions for the pages and results.json (None without a plan).

    Votes of QC-flagged evaluators never count here (whatever the dashboard's switch shows): the plan's rule
    runs on the study's default analysis. When the plan says so and the study can stop, the study is closed here
    (its invite link stops admitting evaluators); the caller's transaction commits it."""
    history = plan_history(session, study_id=study.id)
    if not history:
        return None
    current = history[-1]
    key = hashlib.sha256(json.dumps(current.spec, sort_keys=True).encode()).hexdigest()

    def compute() -> dict[str, Any]:
        frame = cached.frame
        shown = frame[~frame["flagged"].astype(bool)] if "flagged" in frame.columns else frame
        return decisions(shown, current.spec)
    result = cached.memo(f"sequential:{key}", compute)
    closed_now = False
    if current.spec.get("close_when_done") and result["can_stop"] and study.status == "open" and current.frozen:
        study.status = "closed"
        session.flush()
        closed_now = True
    return {"plan": current, "history": history, "decisions": result, "closed_now": closed_now,
            "verified": [verify(p, study.id) for p in history],
            "stated_late": current.frozen and bool(history[0].votes_at_freeze)}


def plan_json(view: dict[str, Any] | None) -> dict[str, Any] | None:
    """The plan block of results.json: every version with its hash, and the decisions of the plan in force."""
    if view is None:
        return None

    def one(p: PlanVersion) -> dict[str, Any]:
        return {"version": p.version, "spec": p.spec, "sha256": p.sha256, "previous_sha256": p.previous_sha256,
                "frozen_at": p.frozen_at.isoformat() if p.frozen_at else None, "votes_at_freeze": p.votes_at_freeze,
                "reason": p.reason}
    return {"plan": one(view["plan"]), "history": [one(p) for p in view["history"]],
            "decisions": view["decisions"]}
