"""Analysis at scale: full results and every export for synthetic studies of 10k, 100k and 1M votes.

    python -m bench.analysis                 # 10k, 100k, 1M votes (~3 minutes; the database up to 100k)
    python -m bench.analysis --tiny          # 2k votes, seconds

Votes come from ``app.stats.synthetic.synthetic_votes`` (six criteria, 100 prompts, 20% ties, theme effects,
prompt and vote random effects). Each study is written into a SQLite database with the app's schema (bulk
inserts through the DB-API, so loading is not what is measured), then timed:

- the floor: ``pandas.read_sql`` of exactly the rows the vote frame is built from (the same SELECT);
- the vote frame the product builds from the database (``app.services.results_data.load_vote_frame``);
- the full results (``app.stats.compute_results``, 1,000 prompt-bootstrap resamples, as the dashboard runs it),
  on the frame, and cold through the dashboard's cache (``get_results``), and a page view on a warm cache;
- every export of ``app.services.exports`` with the frame cached (what an admin's download costs).
"""

from __future__ import annotations

import argparse
import gc
import secrets
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import REPO_ROOT, Report, loglog_exponent, run_cli, timed
from bench.vote_path import configure

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
N_PROMPTS = 100
SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime in SQLite


# The floor: the same information the vote frame is built from, read with pandas straight off the DB-API
# connection: one row per vote (its evaluator, prompt, pair and side) and one row per vote x criterion.
FLOOR_QUERIES = (
    "SELECT v.id, v.study_id, e.public_id, p.external_id, p.theme, p.detail, ca.model_id AS model_a_id, "
    "cb.model_id AS model_b_id, a.left_clip_id = pr.clip_a_id AS left_is_a, v.submitted_at, v.time_spent_ms, "
    "e.flagged FROM votes v JOIN pairs pr ON pr.id = v.pair_id JOIN assignments a ON a.id = v.assignment_id "
    "JOIN prompts p ON p.id = pr.prompt_id JOIN evaluators e ON e.id = v.evaluator_id "
    "JOIN clips ca ON ca.id = pr.clip_a_id JOIN clips cb ON cb.id = pr.clip_b_id "
    "WHERE v.study_id = ? AND pr.kind = 'normal'",
    "SELECT vc.vote_id, vc.criterion_id, vc.side, vc.outcome FROM vote_choices vc JOIN votes v ON v.id = vc.vote_id "
    "WHERE v.study_id = ?",
)


def _ts(series: pd.Series) -> list[str]:
    return list(series.dt.tz_convert("UTC").dt.tz_localize(None).dt.strftime(SQLITE_TS))


def load_into_db(frame: pd.DataFrame) -> int:
    """Write a synthetic vote frame into the app's schema (one study) with bulk DB-API inserts; return study id.

    The synthetic evaluators rate the same prompt more than once, which the schema forbids (an evaluator never
    gets a pair twice), so each (evaluator, prompt) repeat becomes another evaluator session of that person.
    """
    from app.criteria import DEFAULT_CRITERIA
    from app.db import Base, get_engine, session_scope
    from app.models import Clip, Criterion, Pair, Prompt, Study, StudyModel

    engine = get_engine()
    Base.metadata.create_all(engine)
    crit_keys = list(dict.fromkeys(frame["criterion"]))
    votes = frame.drop_duplicates("vote_id").reset_index(drop=True)
    prompts = votes.drop_duplicates("prompt")[["prompt", "theme", "detail"]].sort_values("prompt")
    models = sorted(set(votes["model_a"]) | set(votes["model_b"]))
    with session_scope() as s:
        study = Study(slug=f"bench-{len(votes)}", name=f"Synthetic {len(votes)} votes", status="closed",
                      settings={"seeds": [0], "frames": 16, "width": 512, "height": 512, "fps": 8})
        s.add(study)
        s.flush()
        sm = {m: StudyModel(study_id=study.id, name=m, position=i) for i, m in enumerate(models)}
        s.add_all(sm.values())
        labels = {c.key: c for c in DEFAULT_CRITERIA}
        crit = {k: Criterion(study_id=study.id, key=k, label=labels[k].label if k in labels else k, position=i)
                for i, k in enumerate(crit_keys)}
        s.add_all(crit.values())
        s.flush()
        pair_of: dict[str, Pair] = {}
        for row in prompts.itertuples():
            prompt = Prompt(study_id=study.id, external_id=row.prompt, text=f"synthetic prompt {row.prompt}",
                            theme=row.theme, detail=row.detail)
            s.add(prompt)
            s.flush()
            clips = [Clip(study_id=study.id, model_id=sm[m].id, prompt_id=prompt.id, status="done", origin="imported")
                     for m in models[:2]]
            s.add_all(clips)
            s.flush()
            pair = Pair(study_id=study.id, prompt_id=prompt.id, clip_a_id=clips[0].id, clip_b_id=clips[1].id)
            s.add(pair)
            pair_of[row.prompt] = pair
        s.flush()
        study_id = study.id
        model_id = {m: sm[m].id for m in models}
        crit_id = {k: crit[k].id for k in crit_keys}
        pair_ids = {p: (pair.id, pair.clip_a_id, pair.clip_b_id) for p, pair in pair_of.items()}

    # One evaluator session per (evaluator, k-th time on this prompt); positions within the session.
    votes["session"] = votes.groupby(["evaluator", "prompt"]).cumcount()
    keys = votes["evaluator"] + "#" + votes["session"].astype(str)
    codes, uniques = pd.factorize(keys)
    votes["position"] = votes.groupby(codes).cumcount() + 1
    flagged = votes.groupby(codes)["flagged"].first().to_numpy()
    now = pd.Timestamp.now(tz="UTC").strftime(SQLITE_TS)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN")
        cur.execute("SELECT coalesce(max(id), 0) FROM evaluators")
        ev0 = cur.fetchone()[0]
        cur.executemany(
            "INSERT INTO evaluators (id, study_id, public_id, completion_code, created_at, flagged, flag_reasons) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((ev0 + i + 1, study_id, secrets.token_urlsafe(24), "BENCH", now, bool(flagged[i]),
              '["synthetic"]' if flagged[i] else "[]") for i in range(len(uniques))))
        cur.execute("SELECT coalesce(max(id), 0) FROM votes")
        v0 = cur.fetchone()[0]
        cur.execute("SELECT coalesce(max(id), 0) FROM assignments")
        a0 = cur.fetchone()[0]
        submitted = _ts(votes["submitted_at"])
        shown = _ts(votes["submitted_at"] - pd.to_timedelta(votes["time_spent_ms"], unit="ms"))
        pair_cols = [pair_ids[p] for p in votes["prompt"]]
        a_is_first = (votes["model_a"] == models[0]).to_numpy()
        left_is_a = (votes["left_model"] == votes["model_a"]).to_numpy()
        positions = votes["position"].to_numpy()
        spent = votes["time_spent_ms"].to_numpy()
        assignment_rows = []
        vote_rows = []
        for i in range(len(votes)):
            pid, clip_a, clip_b = pair_cols[i]
            a_left = bool(left_is_a[i]) == bool(a_is_first[i])  # left is the pair's clip_a
            ev = ev0 + int(codes[i]) + 1
            assignment_rows.append((a0 + i + 1, f"b{a0 + i + 1}", ev, pid, int(positions[i]),
                                    clip_a if a_left else clip_b, clip_b if a_left else clip_a, "done", shown[i],
                                    submitted[i]))
            vote_rows.append((v0 + i + 1, a0 + i + 1, study_id, ev, pid, shown[i], submitted[i],
                              int(spent[i]), False))
        cur.executemany(
            "INSERT INTO assignments (id, token, evaluator_id, pair_id, position, left_clip_id, right_clip_id, status, "
            "shown_at, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", assignment_rows)
        cur.executemany(
            "INSERT INTO votes (id, assignment_id, study_id, evaluator_id, pair_id, shown_at, submitted_at, "
            "time_spent_ms, too_fast) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", vote_rows)
        del assignment_rows, vote_rows
        # Choices in model space relative to the pair's clip_a (models[0]); a frame row oriented the other way
        # has its winner flipped.
        vote_index = pd.Series(np.arange(len(votes)), index=votes["vote_id"].to_numpy())
        idx = vote_index.loc[frame["vote_id"].to_numpy()].to_numpy()
        flip = ~a_is_first[idx]
        outcome = frame["winner"].map({"model_a": "a", "model_b": "b", "tie": "tie"}).to_numpy()
        outcome = np.where(flip & (outcome == "a"), "b", np.where(flip & (outcome == "b"), "a", outcome))
        ma, mb = model_id[models[0]], model_id[models[1]]
        winner = np.where(outcome == "a", ma, np.where(outcome == "b", mb, -1))
        cids = frame["criterion"].map(crit_id).to_numpy()
        sides = frame["side"].to_numpy()
        cur.execute("SELECT coalesce(max(id), 0) FROM vote_choices")
        c0 = cur.fetchone()[0]
        cur.executemany(
            "INSERT INTO vote_choices (id, vote_id, criterion_id, side, model_a_id, model_b_id, outcome, "
            "winner_model_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((c0 + j + 1, v0 + int(idx[j]) + 1, int(cids[j]), sides[j], ma, mb, outcome[j],
              None if winner[j] < 0 else int(winner[j])) for j in range(len(frame))))
        cur.execute("UPDATE pairs SET votes_count = (SELECT count(*) FROM votes WHERE votes.pair_id = pairs.id) "
                    "WHERE study_id = ?", (study_id,))
        raw.commit()
    finally:
        raw.close()
    return study_id


def consume(body) -> int:
    if isinstance(body, bytes | str):
        return len(body)
    return sum(len(chunk) for chunk in body)


def measure_size(n: int, *, n_boot: int, use_db: bool, tmp: Path, seed: int) -> dict[str, Any]:
    from app.db import get_engine, session_scope
    from app.models import Study
    from app.services import exports
    from app.services.results_cache import get_cache, get_results
    from app.services.results_data import load_vote_frame
    from app.stats import compute_results
    from app.stats.synthetic import synthetic_votes

    out: dict[str, Any] = {"votes": n}
    t0 = time.perf_counter()
    frame = synthetic_votes(n, n_prompts=N_PROMPTS, n_evaluators=max(40, n // 50), seed=seed)
    out["rows"] = len(frame)
    out["synth_s"] = time.perf_counter() - t0
    gc.collect()
    out["compute_s"], results = timed(partial(compute_results, frame, n_boot=n_boot, seed=0),
                                      repeat=2 if n <= 100_000 else 1)
    out["n_votes_in_results"] = results["n_votes"]
    if not use_db:
        return out

    configure(f"sqlite:///{tmp / f'analysis-{n}.sqlite'}", tmp / f"data-{n}")
    t0 = time.perf_counter()
    study_id = load_into_db(frame)
    out["db_load_s"] = time.perf_counter() - t0
    del frame
    gc.collect()
    engine = get_engine()
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        out["floor_read_sql_s"], floor = timed(lambda: [pd.read_sql(q, dbapi, params=(study_id,))
                                                        for q in FLOOR_QUERIES])
    out["floor_rows"] = len(floor[1])
    del floor
    with session_scope() as s:
        out["vote_frame_s"], vf = timed(lambda: load_vote_frame(s, study_id=study_id))
        out["vote_frame_rows"] = len(vf)
        del vf
        study = s.get(Study, study_id)
        cache = get_cache()
        cache.clear()
        before = cache.computations
        out["results_cold_s"], cold = timed(lambda: get_results(s, study_id=study_id))
        out["results_page_view_s"], _ = timed(lambda: get_results(s, study_id=study_id), repeat=3)
        out["recomputed_on_page_view"] = cache.computations - before != 1
        out["cached_compute_s"] = cold.compute_seconds
        out["exports"] = {}
        for name, call in (
            ("votes.csv", lambda: exports.raw_votes(s, study=study, fmt="csv").body),
            ("votes.jsonl", lambda: exports.raw_votes(s, study=study, fmt="jsonl").body),
            ("votes.parquet", lambda: exports.raw_votes(s, study=study, fmt="parquet").body),
            ("results.json", lambda: exports.results_json(s, study=study).body),
            ("clean_battle overall.json", lambda: exports.clean_battle(s, study=study, criterion="overall").body),
            ("report.html", lambda: exports.html_report(s, study=study).body),
            ("clips manifest.csv", lambda: exports.clips_manifest(s, study=study, fmt="csv").body),
        ):
            t0 = time.perf_counter()
            size = consume(call())
            out["exports"][name] = {"seconds": time.perf_counter() - t0, "bytes": size}
    return out


def run(args) -> Report:
    cmd = "python -m bench.analysis" + (" --tiny" if args.tiny else "")
    report = Report("analysis", "Analysis at scale: full results and exports against reading the votes out",
                    cmd, params=dict(vars(args)))
    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-analysis-"))
    rows = []
    try:
        for n in args.sizes:
            print(f"analysis: {n:,} votes", flush=True)
            rows.append(measure_size(n, n_boot=args.n_boot, use_db=n <= args.max_db_votes, tmp=tmp, seed=args.seed))
            print(f"  {rows[-1]}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.data = {"sizes": rows}
    report.table(
        "Full results (compute_results, prompt bootstrap) against reading the votes out of SQLite",
        ["votes", "rows (vote × criterion)", "full results s", "floor: read_sql s", "results / floor",
         "vote frame from DB s", "cold dashboard (cache miss) s", "page view (cache hit) ms", "DB load s (setup)"],
        [[r["votes"], r["rows"], r["compute_s"], r.get("floor_read_sql_s"),
          r["compute_s"] / r["floor_read_sql_s"] if r.get("floor_read_sql_s") else None, r.get("vote_frame_s"),
          r.get("results_cold_s"), r["results_page_view_s"] * 1000 if "results_page_view_s" in r else None,
          r.get("db_load_s")] for r in rows])
    with_db = [r for r in rows if "exports" in r]
    if with_db:
        names = list(with_db[0]["exports"])
        report.table("Exports with the vote frame cached (seconds; size in MB)",
                     ["export", *[f"{r['votes']:,} votes s" for r in with_db],
                      *[f"{r['votes']:,} MB" for r in with_db]],
                     [[name, *[r["exports"][name]["seconds"] for r in with_db],
                       *[r["exports"][name]["bytes"] / 1e6 for r in with_db]] for name in names])
    exp = loglog_exponent([r["votes"] for r in rows], [r["compute_s"] for r in rows])
    floor_exp = loglog_exponent([r["votes"] for r in with_db], [r["floor_read_sql_s"] for r in with_db])
    # Fixed costs (bootstrap set-up, tests, the tables) flatten the curve at small sizes; the slope between the
    # two largest sizes says how the cost grows where it matters.
    tail_exp = loglog_exponent([r["votes"] for r in rows[-2:]], [r["compute_s"] for r in rows[-2:]])
    report.data["exponent"] = exp
    report.data["tail_exponent"] = tail_exp
    report.data["floor_exponent"] = floor_exp
    largest = rows[-1]
    report.bar(f"full results for {largest['votes']:,} votes < 5 s", largest["compute_s"] < 5,
               f"{largest['compute_s']:.2f} s")
    report.bar("growth close to linear (log-log slope of full-results time vs votes, ≤ 1.15)",
               exp is not None and exp <= 1.15 and (tail_exp is None or tail_exp <= 1.15),
               f"slope {exp:.2f} over all sizes, {tail_exp:.2f} between the two largest" if exp is not None else "–")
    recomputed = [r for r in with_db if r.get("recomputed_on_page_view")]
    report.bar("no recomputation per page view (results cache)", not recomputed if with_db else None,
               "not measured (no database sizes)" if not with_db else
               "one computation per vote change; page view = 2 indexed queries" if not recomputed else "recomputed!")
    report.notes.append(
        f"Growth exponent of the floor (read_sql) over the DB sizes: {floor_exp:.2f}." if floor_exp else
        "Floor exponent needs two DB sizes.")
    report.notes.append("The dashboard never recomputes per page view: app.services.results_cache keys results by a "
                        "vote fingerprint (count, max id, flagged digest: two indexed queries) and grows the cached "
                        "frame incrementally; the 'page view' column is a cache hit.")
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES))
    p.add_argument("--max-db-votes", type=int, default=100_000,
                   help="sizes above this are timed on the frame only (no database floor or exports): loading and "
                   "reading 1M votes (8M rows) through SQLite takes ~10 minutes on a 2-core machine")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


# What --tiny means here: the test suite's size, seconds long.
TINY = ["--tiny", "--sizes", "500", "2000", "--n-boot", "50"]


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.analysis", parser, run, argv, lambda rest: parser().parse_args([*TINY, *rest]))

if __name__ == "__main__":
    main(sys.argv[1:])
