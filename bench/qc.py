"""Quality control by simulation: which raters the real QC rules flag, and what the results read after QC.

Simulated raters take whole sessions through the real services (``join``, ``next_assignment``,
``submit_vote``: the check plan, the flags after every vote, the reliability rule at completion and every few
completed sessions) on a SQLite study of two models, with a clock moved by hand so each vote takes the time
the rater model says. Nothing of QC is re-implemented here: the bench only decides what each rater clicks and
reads back ``Evaluator.flagged``.

Raters (each session one rater; a rater sees what is on the screen: which model's clip is on which side, and
for a check, which clip is the original, as a person looking at the pixels would):
- ``honest``: per prompt the fast model is preferred with probability p (Beta, mean ``--true-share``), a tie
  1 time in 10; the other criteria follow the overall answer 60 % of the time. Attention checks answered right
  except a slip 1 time in 20. About 9 s a vote (log-normal, sigma 0.45).
- ``brisk``: an honest expert who answers a quarter of the votes in 3-5 s (uniform).
- ``random``: a slow random clicker: left, right or tie at random on every criterion, about 8 s a vote.
- ``left70``: a slow position-biased clicker: the left clip on every criterion of 70 % of the votes, the right
  one on the rest.
- ``tie``: a slow "indistinguishable" clicker: tie on everything.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import REPO_ROOT, Report, run_cli

KINDS = ("honest", "brisk", "random", "left70", "tie")
CARELESS = ("random", "left70", "tie")
FAST, SLOW = "fast", "slow"


@dataclass
class SimResult:
    """Per rater kind: sessions and sessions flagged (and by which rule), plus the schedule and the estimate."""

    sessions: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)
    by_rule: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    checks_per_session: Counter[int] = field(default_factory=Counter)
    check_share: float = 0.0
    first_pair_checks: int = 0
    sessions_with_check_clip_repeated: int = 0
    sessions_with_two_kinds: int = 0
    truth: float = 0.0  # the honest raters' expected share of decided overall answers for the fast model
    estimate_all: float = 0.0  # the same share read from every session
    estimate_after_qc: float = 0.0  # ... from the sessions QC left in
    estimate_honest_only: float = 0.0  # ... from the honest sessions alone (sampling noise, for reference)
    votes: int = 0

    def rate(self, kind: str) -> float:
        return self.flagged[kind] / self.sessions[kind] if self.sessions[kind] else float("nan")

    def honest_rate(self) -> float:
        n = self.sessions["honest"] + self.sessions["brisk"]
        return (self.flagged["honest"] + self.flagged["brisk"]) / n if n else float("nan")


def _gif(seed: int) -> bytes:
    """A small clip that moves (a square crossing a textured background), different per seed."""
    rng = np.random.default_rng(seed)
    background = rng.integers(30, 200, size=(4, 4, 3)).repeat(8, axis=0).repeat(8, axis=1).astype(np.uint8)
    frames = []
    for i in range(6):
        f = background.copy()
        x = (i * 5) % 26
        f[10:18, x:x + 6] = (230, 40, 40)
        frames.append(Image.fromarray(f, "RGB").convert("P", palette=Image.Palette.ADAPTIVE))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=125, loop=0)
    return buf.getvalue()


def build_study(*, n_prompts: int, pairs_per_session: int, qc: dict[str, Any], seed: int) -> int:
    """A study of two models with one clip each per prompt, its pairs and its attention checks; its id."""
    from app.criteria import DEFAULT_CRITERIA
    from app.db import session_scope
    from app.media.storage import store_bytes
    from app.models import Clip, Criterion, Pair, Prompt, Study, StudyModel
    from app.services.attention import ensure_attention_pairs

    with session_scope() as s:
        study = Study(slug=f"qc-bench-{seed}-{random.getrandbits(32)}", name="QC bench", status="open",
                      votes_per_pair=10**6, pairs_per_session=pairs_per_session, sessions_per_invite=0,
                      qc={"sessions_per_address": 0, **qc},
                      settings={"seeds": [0], "frames": 6, "width": 32, "height": 32, "fps": 8})
        s.add(study)
        s.flush()
        models = [StudyModel(study_id=study.id, name=name, preset="", position=i)
                  for i, name in enumerate((FAST, SLOW))]
        s.add_all(models)
        for i, c in enumerate(DEFAULT_CRITERIA):
            s.add(Criterion(study_id=study.id, key=c.key, label=c.label, description=c.description, position=i))
        s.flush()
        for i in range(n_prompts):
            prompt = Prompt(study_id=study.id, external_id=f"p{i:04d}", text=f"prompt {i}", theme="t", detail="short")
            s.add(prompt)
            s.flush()
            clips = []
            for j, model in enumerate(models):
                stored = store_bytes(_gif(seed * 100003 + i * 2 + j))
                clip = Clip(study_id=study.id, model_id=model.id, prompt_id=prompt.id, seed=0, origin="imported",
                            status="done", storage_name=stored.storage_name, sha256=stored.sha256,
                            size_bytes=stored.size_bytes, width=32, height=32, frames=6, fps=8)
                s.add(clip)
                clips.append(clip)
            s.flush()
            s.add(Pair(study_id=study.id, prompt_id=prompt.id, clip_a_id=clips[0].id, clip_b_id=clips[1].id))
        s.flush()
        ensure_attention_pairs(s, study_id=study.id, rng=random.Random(seed))
        return study.id


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def hand_moved_clock() -> Iterator[Clock]:
    """The rating flow's ``utcnow`` replaced by a clock the simulation moves (as tests/support/clock.py)."""
    import app.services.assignments as assignments
    import app.services.votes as votes

    clock = Clock()
    saved = (assignments.utcnow, votes.utcnow)
    assignments.utcnow = clock  # type: ignore[assignment]
    votes.utcnow = clock  # type: ignore[assignment]
    try:
        yield clock
    finally:
        assignments.utcnow, votes.utcnow = saved


@dataclass(frozen=True)
class Screen:
    """What a rater sees of one pair: its kind, which model is on the left, which side holds the original."""

    kind: str
    left_model: str
    original_left: bool
    prompt_id: int
    variant: str


def _answer(kind: str, screen: Screen, keys: list[str], p_fast: float, rng: random.Random) -> dict[str, str]:
    if kind == "random":
        return {k: rng.choice(("left", "right", "tie")) for k in keys}
    if kind == "left70":
        return dict.fromkeys(keys, "left" if rng.random() < 0.7 else "right")
    if kind == "tie":
        return dict.fromkeys(keys, "tie")
    # honest and brisk
    from app.services.attention import CHECK_DEGRADED, CHECK_SAME, EXPECTED_WINS

    original = "left" if screen.original_left else "right"
    slip = rng.random() < 0.05
    if screen.kind == CHECK_SAME:
        out = dict.fromkeys(keys, "tie")
        if slip:
            out[rng.choice(keys)] = rng.choice(("left", "right"))
        return out
    if screen.kind == CHECK_DEGRADED:
        must = [k for k in EXPECTED_WINS.get(screen.variant, ("overall_quality",)) if k in keys]
        out = {k: (original if k in must or rng.random() < 0.6 else "tie") for k in keys}
        if slip:
            out[rng.choice(must)] = "tie"
        return out

    def model_side(model: str) -> str:
        return "left" if screen.left_model == model else "right"

    def draw(tie: float) -> str:
        if rng.random() < tie:
            return "tie"
        return model_side(FAST if rng.random() < p_fast else SLOW)

    overall = draw(0.1)
    return {k: (overall if k == "overall_quality" or rng.random() < 0.6 else draw(0.2)) for k in keys}


def _seconds(kind: str, rng: random.Random) -> float:
    if kind == "brisk" and rng.random() < 0.25:
        return rng.uniform(3.0, 5.0)
    median = 9.0 if kind in ("honest", "brisk") else 8.0
    return max(1.0, rng.lognormvariate(np.log(median), 0.45))


def simulate(*, cohort: dict[str, int], n_prompts: int = 200, pairs_per_session: int = 10,
             qc: dict[str, Any] | None = None, true_share: float = 0.859, concentration: float = 10.0,
             seed: int = 0) -> SimResult:
    """Run ``cohort`` (rater kind -> sessions) through one study, sessions in random order; the database must be
    configured (app.db) with its schema created."""
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Assignment, Clip, Evaluator, Pair, Study, StudyModel, Vote, VoteChoice
    from app.services.assignments import join, next_assignment, study_criteria
    from app.services.attention import CHECK_KINDS
    from app.services.votes import submit_vote

    rng = random.Random(seed)
    study_id = build_study(n_prompts=n_prompts, pairs_per_session=pairs_per_session, qc=qc or {}, seed=seed)
    with session_scope() as s:
        invite = s.scalar(select(Study.invite_token).where(Study.id == study_id)) or ""
        model_of = {r[0]: r[1] for r in s.execute(
            select(Clip.id, StudyModel.name).join(StudyModel, StudyModel.id == Clip.model_id)
            .where(Clip.study_id == study_id))}
        variant_of = {r[0]: r[1] for r in s.execute(select(Clip.id, Clip.variant).where(Clip.study_id == study_id))}
        pair_b = {r[0]: r[1] for r in s.execute(select(Pair.id, Pair.clip_b_id).where(Pair.study_id == study_id))}
        keys = [c.key for c in study_criteria(s, study_id)]
    np_rng = np.random.default_rng(seed)
    a, b = true_share * concentration, (1 - true_share) * concentration
    p_fast: dict[int, float] = {}

    kinds = [k for k, n in cohort.items() for _ in range(n)]
    rng.shuffle(kinds)
    session_kind: dict[int, str] = {}
    with hand_moved_clock() as clock:
        for i, kind in enumerate(kinds):
            with session_scope() as s:
                ev = join(s, invite_token=invite, ip=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                          user_agent=f"bench {kind}")
                evaluator_id = ev.id
            session_kind[evaluator_id] = kind
            while True:
                clock.now += timedelta(seconds=1)
                with session_scope() as s:
                    view = next_assignment(s, evaluator_id=evaluator_id)
                    if view is None:
                        break
                    token = view.token
                    original_left = view.left_clip_id == view.clip_a_id
                    prompt_id = s.get(Pair, view.pair_id).prompt_id  # type: ignore[union-attr]
                    screen = Screen(view.kind, model_of[view.left_clip_id], original_left, prompt_id,
                                    variant_of.get(pair_b[view.pair_id], ""))
                p = p_fast.setdefault(prompt_id, float(np_rng.beta(a, b)))
                choices = _answer(kind, screen, keys, p, rng)
                clock.now += timedelta(seconds=_seconds(kind, rng))
                with session_scope() as s:
                    result = submit_vote(s, assignment_token=token, evaluator_id=evaluator_id, choices=choices)
                    if result.status != "recorded":
                        raise RuntimeError(f"a simulated vote was not recorded: {result.status}")

    out = SimResult()
    with session_scope() as s:
        flags = {eid: (bool(f), list(r or [])) for eid, f, r in s.execute(
            select(Evaluator.id, Evaluator.flagged, Evaluator.flag_reasons).where(Evaluator.study_id == study_id))}
        shown = s.execute(
            select(Assignment.evaluator_id, Assignment.position, Pair.kind, Pair.clip_a_id, Pair.clip_b_id,
                   Pair.prompt_id)
            .join(Pair, Pair.id == Assignment.pair_id).where(Pair.study_id == study_id)
            .order_by(Assignment.evaluator_id, Assignment.position)).all()
        overall = s.execute(
            select(Vote.evaluator_id, Pair.prompt_id, VoteChoice.winner_model_id, VoteChoice.outcome)
            .join(VoteChoice, VoteChoice.vote_id == Vote.id).join(Pair, Pair.id == Vote.pair_id)
            .where(Vote.study_id == study_id, Pair.kind == "normal",
                   VoteChoice.criterion_id.in_(_criterion_id(study_id, "overall_quality")))).all()
        fast_id = s.scalar(select(StudyModel.id).where(StudyModel.study_id == study_id, StudyModel.name == FAST))
        out.votes = s.scalar(select(_count_votes(study_id))) or 0

    for eid, kind in session_kind.items():
        flagged, reasons = flags[eid]
        out.sessions[kind] += 1
        if flagged:
            out.flagged[kind] += 1
            for r in reasons:
                out.by_rule[kind][_rule(r)] += 1
    per_session: dict[int, list[Any]] = defaultdict(list)
    for row in shown:
        per_session[row.evaluator_id].append(row)
    n_checks = 0
    for rows in per_session.values():
        checks = [r for r in rows if r.kind in CHECK_KINDS]
        n_checks += len(checks)
        out.checks_per_session[len(checks)] += 1
        out.first_pair_checks += rows[0].kind in CHECK_KINDS
        out.sessions_with_two_kinds += len({r.kind for r in checks}) == 2
        # A check shows its original clip (clip_a); shown anywhere else in the session too, the rater has seen
        # the very clip before or will again.
        clips_elsewhere = Counter(c for r in rows for c in (r.clip_a_id, r.clip_b_id))
        out.sessions_with_check_clip_repeated += any(clips_elsewhere[r.clip_a_id] > 1 for r in checks)
    out.check_share = n_checks / max(1, len(shown))

    def share(rows: list[Any]) -> float:
        decided = [r for r in rows if r.outcome != "tie"]
        return sum(r.winner_model_id == fast_id for r in decided) / max(1, len(decided))

    out.estimate_all = share(overall)
    out.estimate_after_qc = share([r for r in overall if not flags[r.evaluator_id][0]])
    honest = {eid for eid, k in session_kind.items() if k in ("honest", "brisk")}
    out.estimate_honest_only = share([r for r in overall if r.evaluator_id in honest])
    # The truth: an honest rater's expected share of decided answers, over the prompts as they were rated.
    rated = Counter(r.prompt_id for r in overall if r.evaluator_id in honest)
    out.truth = sum(p_fast[pid] * n for pid, n in rated.items()) / max(1, sum(rated.values()))
    return out


def _criterion_id(study_id: int, key: str) -> Any:
    from sqlalchemy import select

    from app.models import Criterion

    return select(Criterion.id).where(Criterion.study_id == study_id, Criterion.key == key)


def _count_votes(study_id: int) -> Any:
    from sqlalchemy import func, select

    from app.models import Vote

    return select(func.count(Vote.id)).where(Vote.study_id == study_id).scalar_subquery()


def _rule(reason: str) -> str:
    from app.services.qc import CLUSTER_REASON, RELIABILITY_REASON

    if reason.startswith(RELIABILITY_REASON):
        return "reliability"
    if reason.startswith(CLUSTER_REASON):
        return "cluster"
    if reason.startswith("failed"):
        return "checks"
    if "submitted in under" in reason:
        return "too fast"
    if "straight-lining" in reason:
        return "straight-lining"
    return "other"


@contextmanager
def scratch_database() -> Iterator[Path]:
    """A throw-away data folder and SQLite database for the app, schema created; the settings restored after."""
    import app.models  # noqa: F401  (registers the tables on Base before create_all)
    from app import config, db

    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-qc-"))
    saved = {k: os.environ.get(k) for k in ("BLINDPAIR_DATA_DIR", "BLINDPAIR_DATABASE_URL", "BLINDPAIR_ENVIRONMENT",
                                            "BLINDPAIR_SECRET_KEY")}
    os.environ.update(BLINDPAIR_DATA_DIR=str(tmp / "var"), BLINDPAIR_DATABASE_URL=f"sqlite:///{tmp / 'qc.sqlite'}",
                      BLINDPAIR_ENVIRONMENT="test")
    os.environ.setdefault("BLINDPAIR_SECRET_KEY", "bench-qc-secret-key-that-is-long-enough-0123456789")
    config.get_settings.cache_clear()
    db.reset_engine_cache()
    try:
        db.Base.metadata.create_all(db.get_engine())
        yield tmp
    finally:
        db.reset_engine_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        config.get_settings.cache_clear()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace) -> Report:
    report = Report("qc", "Quality control by simulation: careless raters caught, honest ones left alone",
                    "python -m bench.qc", params=dict(vars(args)))
    careless_each = round(args.sessions * args.careless_share / len(CARELESS))
    honest_total = args.sessions - careless_each * len(CARELESS)
    cohort = {"honest": honest_total - honest_total // 2, "brisk": honest_total // 2,
              **dict.fromkeys(CARELESS, careless_each)}
    results = []
    with scratch_database():
        for seed in range(args.seed, args.seed + args.repeats):
            print(f"qc: seed {seed}, cohort {cohort}", flush=True)
            results.append(simulate(cohort=cohort, n_prompts=args.prompts, pairs_per_session=args.pairs_per_session,
                                    true_share=args.true_share, seed=seed))
    total = SimResult()
    for r in results:
        total.sessions.update(r.sessions)
        total.flagged.update(r.flagged)
        for k, c in r.by_rule.items():
            total.by_rule[k].update(c)
        total.checks_per_session.update(r.checks_per_session)
    sessions = sum(total.checks_per_session.values())
    report.table(
        f"Sessions flagged, by rater ({args.pairs_per_session} pairs per session, {args.prompts} prompts, "
        f"{args.careless_share:.0%} careless, {args.repeats} studies)",
        ["rater", "sessions", "flagged", "rate", "by rule (a session may have several)"],
        [[k, total.sessions[k], total.flagged[k], total.rate(k),
          ", ".join(f"{rule} {n}" for rule, n in sorted(total.by_rule[k].items())) or "–"] for k in KINDS])
    report.table("The check schedule as served",
                 ["checks in a session", "sessions"], sorted(total.checks_per_session.items()))
    report.table("Estimate of the fast model's share of decided overall-quality answers, per study",
                 ["seed", "truth (honest raters' expectation)", "all sessions", "after QC", "honest sessions only",
                  "after QC - truth", "check share of pairs", "sessions with a check clip seen twice",
                  "sessions with both check kinds", "checks on the first pair"],
                 [[args.seed + i, r.truth, r.estimate_all, r.estimate_after_qc, r.estimate_honest_only,
                   r.estimate_after_qc - r.truth, r.check_share, r.sessions_with_check_clip_repeated,
                   r.sessions_with_two_kinds, r.first_pair_checks] for i, r in enumerate(results)])
    report.data = {
        "cohort": cohort, "rates": {k: total.rate(k) for k in KINDS}, "honest_rate": total.honest_rate(),
        "by_rule": {k: dict(v) for k, v in total.by_rule.items()},
        "checks_per_session": dict(total.checks_per_session),
        "studies": [{"truth": r.truth, "all": r.estimate_all, "after_qc": r.estimate_after_qc,
                     "honest_only": r.estimate_honest_only, "check_share": r.check_share,
                     "check_clip_repeated": r.sessions_with_check_clip_repeated, "votes": r.votes}
                    for r in results],
    }
    worst = max(abs(r.estimate_after_qc - r.truth) for r in results)
    report.bar("honest raters flagged ≤ 2 % (brisk experts included)", total.honest_rate() <= 0.02,
               f"{total.honest_rate():.1%} (honest {total.rate('honest'):.1%}, brisk {total.rate('brisk'):.1%})")
    report.bar("slow random clickers caught ≥ 90 %", total.rate("random") >= 0.9, f"{total.rate('random'):.1%}")
    report.bar("70 %-position-biased caught ≥ 80 %", total.rate("left70") >= 0.8, f"{total.rate('left70'):.1%}")
    report.bar("always-tie caught ≥ 80 %", total.rate("tie") >= 0.8, f"{total.rate('tie'):.1%}")
    report.bar(f"with {args.careless_share:.0%} careless raters, the estimate after QC within 0.02 of the truth",
               worst <= 0.02, f"worst of {len(results)} studies: {worst:.3f}")
    report.bar("every session at least two checks, none first", min(total.checks_per_session) >= 2
               and not any(r.first_pair_checks for r in results),
               f"fewest {min(total.checks_per_session)}; first-pair checks "
               f"{sum(r.first_pair_checks for r in results)}")
    report.notes.append(f"{sessions} sessions, {sum(r.votes for r in results)} votes through the real services.")
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--sessions", type=int, default=800, help="sessions per study")
    p.add_argument("--careless-share", type=float, default=0.25)
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--pairs-per-session", type=int, default=10)
    p.add_argument("--true-share", type=float, default=0.859)
    p.add_argument("--repeats", type=int, default=1, help="studies, one per seed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


TINY = ["--tiny", "--sessions", "48", "--prompts", "40"]


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.qc", parser, run, argv, lambda rest: parser().parse_args([*TINY, *rest]))


if __name__ == "__main__":
    main(sys.argv[1:])
