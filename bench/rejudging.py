"""What a study-wide QC re-judging costs as a study grows (issue 16): the pause every vote in flight waits out.

    python -m bench.rejudging            # up to 20,000 votes (a few minutes on 2 cores)
    python -m bench.rejudging --tiny     # seconds, what the test suite runs

The reliability rule re-judges the whole study from the web process (app/services/qc.py, ``rejudge``), spaced
by app/services/rejudging.py to at most 1/40 of a core. The spacing bounds its share of the CPU, not the
length of one re-judging: while one runs, it holds a rating slot and competes for the interpreter with every
vote in flight, so its length is the pause those votes see. One SQLite study (bench/vote_path.py's: 2 models, 100
prompts, attention checks) is rated in-process through the evaluator API's route functions (bench/vote_services.py,
random answers) up to each size, and at each size this times, best of ``--repeat``:

- the whole reliability re-judging (read the study's answers, estimate, write the flags that change);
- its parts: reading the answers as columns (``study_answers``), the estimate on them (``rater_reliability``),
  and the same estimate answer by answer as its definition reads (tests/support/reliability_reference.py, the
  code the app ran before), on the same answers, which must agree;
- the address-cluster re-judging (everyone here joins from one address, so there is no cluster to compare:
  the cheap path every third vote of such a study takes).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Report, run_cli, timed
from bench.vote_path import configure, database, seed_study
from bench.vote_services import _cast


def best_cpu(fn, repeat: int) -> tuple[float, Any]:
    """Least CPU seconds of ``repeat`` calls, and the last result."""
    return timed(fn, repeat=repeat, clock=time.process_time)


def _agree(a: dict, b: dict) -> bool:
    fields = ("votes", "decided", "observed", "expected", "sd", "lean")
    return set(a) == set(b) and all(
        math.isclose(getattr(a[r], f), getattr(b[r], f), rel_tol=1e-9, abs_tol=1e-12) for r in a for f in fields)


def measure(study_id: int, repeat: int) -> dict[str, Any]:
    from app.db import get_engine, read_session_scope, session_scope
    from app.models import Study
    from app.services import rejudging_debts
    from app.services.qc import (
        CLUSTER_REASON,
        RELIABILITY_REASON,
        cluster_reasons,
        rejudge,
        reliability_reasons,
        study_answers,
    )
    from app.trust.reliability import CHOICES, Answer, rater_reliability
    from tests.support.reliability_reference import reference_reliability

    engine = get_engine()
    with read_session_scope(engine) as s:
        study = s.get(Study, study_id)
        if study is None:
            raise RuntimeError(f"study {study_id} is missing")
        read_s, table = best_cpu(lambda: study_answers(s, study_id=study_id), repeat)
        estimate_s, columnar = best_cpu(lambda: rater_reliability(table), repeat)
        answers = [Answer(rater=int(table.rater[i]), vote=int(table.vote[i]), pair=int(table.pair[i]),
                          criterion=str(table.criterion[i]), choice=CHOICES[table.choice[i]],
                          model_a=int(table.model_a[i]), model_b=int(table.model_b[i]),
                          known=None if table.known[i] < 0 else CHOICES[table.known[i]])
                   for i in range(len(table))]
        reference_s, reference = best_cpu(lambda: reference_reliability(answers), repeat)
    if not _agree(columnar, reference):
        raise RuntimeError("the columnar estimate differs from the answer-by-answer one: its timing means nothing")
    def owed_then(rule: str, check, reason: str, n: int) -> tuple[float, Any]:
        """Least CPU seconds of ``n`` re-judgings of ``rule``, each owed first as a vote's trigger owes it (a
        re-judging with no debt to pay judges nothing); the debt's INSERT is the vote's, and is not timed."""
        best, result = float("inf"), None
        for _ in range(n):
            with session_scope(engine) as vote:
                rejudging_debts.record(vote, study_id=study_id, rule=rule)
            seconds, result = best_cpu(lambda: rejudge(engine, study_id=study_id, check=check, reason=reason,
                                                       rule=rule), 1)
            best = min(best, seconds)
        return best, result

    # The first re-judging at a size writes the flags that changed since the last; the repeats find nothing to
    # write. Both are kept: the write is part of what the votes in flight wait out.
    first_s, written = owed_then("reliability", reliability_reasons, RELIABILITY_REASON, 1)
    whole_s, _ = owed_then("reliability", reliability_reasons, RELIABILITY_REASON, repeat)
    cluster_s, _ = owed_then("clusters", cluster_reasons, CLUSTER_REASON, repeat)
    return {"answers": len(table), "raters": len(columnar), "reliability_first_s": first_s, "rows_written": written,
            "reliability_s": whole_s, "read_s": read_s,
            "estimate_s": estimate_s, "reference_estimate_s": reference_s, "cluster_s": cluster_s}


def run(args: argparse.Namespace) -> Report:
    report = Report("rejudging", "What a study-wide QC re-judging costs as the study grows (issue 16)",
                    "python -m bench.rejudging", params=dict(vars(args)))
    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-rejudging-"))
    rows: dict[int, dict[str, Any]] = {}
    try:
        with database("sqlite", tmp) as url:
            configure(url, tmp / "data")
            study_id, invite, _note = seed_study(n_prompts=args.prompts, pairs_per_session=args.pairs_per_session)
            rng, cast = random.Random(args.seed), 0
            for size in sorted(args.votes):
                t0 = time.perf_counter()
                _cast(invite, size - cast, rng)
                cast = size
                print(f"  {size:,} votes cast ({time.perf_counter() - t0:.0f} s); timing the re-judgings", flush=True)
                rows[size] = measure(study_id, args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.table(
        f"CPU seconds per re-judging, best of {args.repeat} (SQLite, {args.prompts} prompts, "
        f"{args.pairs_per_session} pairs per session, random answers)",
        ["votes", "answers (vote x criterion)", "raters", "reliability re-judging with its write, s (flags written)",
         "reliability re-judging, nothing to write, s", "reading the answers, s", "the estimate, s",
         "the estimate answer by answer (before), s", "cluster re-judging, s"],
        [[v, m["answers"], m["raters"], f"{m['reliability_first_s']:.3g} ({m['rows_written']})", m["reliability_s"],
          m["read_s"], m["estimate_s"], m["reference_estimate_s"], m["cluster_s"]] for v, m in rows.items()])
    report.notes = [
        "The reliability re-judging is app/services/qc.py's `rejudge` with the reliability rule: a read snapshot, "
        "the estimate, then a short write of the flags that change. The first at each size writes what changed "
        "since the size before (one run, so noisier); the best of the repeats has nothing left to write. At the "
        "small sizes the figures are a few ms and vary by a quarter between runs. While it runs it holds one of "
        "the process's rating slots and shares the interpreter with the votes in flight: its length is the "
        "pause they see. "
        "app/services/rejudging.py spaces re-judgings by 40 times their last length, so their share of a core "
        "stays under 2.5% whatever the study's size; the length of each is what this table measures.",
        "The answer-by-answer estimate is tests/support/reliability_reference.py (what the app ran before it "
        "read answers as columns), timed on the same answers; both must give the same estimates or the run stops.",
    ]
    report.data = {str(v): m for v, m in rows.items()}
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="seconds-long run (the test suite's size)")
    p.add_argument("--votes", type=int, nargs="+", default=[2000, 5000, 10000, 20000],
                   help="study sizes (votes) at which to time the re-judgings")
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--pairs-per-session", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


TINY = ["--tiny", "--votes", "60", "150", "--prompts", "20", "--pairs-per-session", "10", "--repeat", "1"]


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.rejudging", parser, run, argv, lambda rest: parser().parse_args([*TINY, *rest]))


if __name__ == "__main__":
    main(sys.argv[1:])
