"""Speed where users feel it (issue 16): a launch burst, the vote path against FastAPI's own floor, the open loop.

    python -m bench.launch                 # full size (about 15 minutes on 2 cores)
    python -m bench.launch --tiny          # seconds, what the test suite runs

Per database (SQLite, PostgreSQL), one seeded study (bench/vote_path.py: 2 models, 100 prompts, attention
checks on), three servers in turn under the same load generator (bench/loadgen.py, its own process):

- **FastAPI floor** (bench/fastapi_floor_app.py): a bare FastAPI app, a ``def`` endpoint inserting one row
  with SQLAlchemy Core. The bar: BlindPair's votes/s at least half of its requests/s at every level.
- **Starlette floor** (bench/floor_app.py), for reference: what the framework itself costs.
- **BlindPair** through its evaluator API, one request per vote (``POST /votes?next=true`` answers with the
  next pair; the ``api1`` flow), at the same closed-loop levels; then the **launch burst**: N evaluators
  arriving within ``--join-seconds`` who join and then vote as fast as the server answers (the bar: at least 70%
  of the best closed-loop level's throughput, vote POST p99 under 1 s, no errors, stored = accepted); then the
  **open loop** at ``--rate`` votes/s (the bar on SQLite: p99 under 100 ms, no errors).

Server CPU per request is read from /proc over each run's measured window (warm-up and the open loop's pool joins
are not charged), so the ratios can be judged apart from the load generator, which shares the cores. What the
app's HTTP layer costs piece by piece is bench/http_costs.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Report, run_cli
from bench.servers import available_backends, uvicorn_server
from bench.vote_path import APP_FACTORY, FLOOR_FACTORY, configure, counts_agree, database, measure, seed_study

FASTAPI_FLOOR_FACTORY = "bench.fastapi_floor_app:create_app"
FLOW = "api1"


def _burst(base: str, proc, invite: str, n: int, args) -> dict[str, Any]:
    cfg = {"mode": "burst", "concurrency": n, "duration": args.burst_duration, "join_seconds": args.join_seconds,
           "invite": invite, "flow": args.burst_flow, "warmup": args.join_seconds}
    return measure(base, proc, kind="app", cfg=cfg, table="votes")


def run_backend(backend: str, args, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"closed": {}, "reference": {}, "burst": {}, "open": {}}
    with database(backend, tmp) as url:
        env = configure(url, tmp / f"data-{backend}")
        t0 = time.perf_counter()
        _study_id, invite, check_note = seed_study(n_prompts=args.prompts, pairs_per_session=args.pairs_per_session)
        out["seed_seconds"], out["check_note"] = time.perf_counter() - t0, check_note
        closed = {"mode": "closed", "duration": args.duration, "warmup": args.warmup, "invite": invite, "flow": FLOW}
        servers = (("fastapi", FASTAPI_FLOOR_FACTORY, "/ping", "bench_fastapi_floor_votes"),
                   ("floor", FLOOR_FACTORY, "/ping", "bench_floor_votes"),
                   ("app", APP_FACTORY, "/static/css/app.css", "votes"))
        for kind, factory, ping, table in servers:
            with uvicorn_server(factory, env, tmp / f"{backend}-{kind}.log", ping=ping) as (base, proc):
                for c in args.concurrency:
                    m = out["closed"][(kind, c)] = measure(base, proc, kind=kind, cfg={**closed, "concurrency": c},
                                                           table=table)
                    print(f"  {backend} {kind} closed c={c}: {_line(m)}", flush=True)
                if kind != "app":
                    continue
                # The bursts' reference: the best closed-loop level in the bursts' own flow.
                for c in args.burst_reference:
                    cfg = {**closed, "concurrency": c, "flow": args.burst_flow}
                    m = out["reference"][c] = measure(base, proc, kind="app", cfg=cfg, table="votes")
                    print(f"  {backend} app closed c={c} ({args.burst_flow} flow): {_line(m)}", flush=True)
                for n in args.burst:
                    m = out["burst"][n] = _burst(base, proc, invite, n, args)
                    print(f"  {backend} app burst n={n}: {_line(m)}", flush=True)
                for rate in (r for r in args.rate if r > 0):
                    cfg = {"mode": "open", "duration": args.open_duration, "rate": rate, "invite": invite,
                           "flow": FLOW, "pool": args.pool or int(rate * 10)}
                    m = out["open"][rate] = measure(base, proc, kind="app", cfg=cfg, table="votes")
                    print(f"  {backend} app open {rate:g}/s: {_line(m)}", flush=True)
    return out


def _line(m: dict[str, Any]) -> str:
    return (f"{m['votes_per_s']:.0f} votes/s, p99 {m['p99_ms'] or 0:.1f} ms, POST p99 {m['post_p99_ms'] or 0:.1f} ms, "
            f"accepted {m['accepted']} stored {m['stored']}, errors {m['errors'] or 0}")


def _errors(m: dict[str, Any]) -> int:
    return sum(m["errors"].values())


def write(report: Report, results: dict[str, Any], args) -> None:
    for backend, res in results.items():
        rows = []
        for c in args.concurrency:
            app, fa, st = (res["closed"][(k, c)] for k in ("app", "fastapi", "floor"))
            ratio = app["votes_per_s"] / fa["votes_per_s"] if fa["votes_per_s"] else None
            rows.append([c, app["votes_per_s"], fa["votes_per_s"], ratio, st["votes_per_s"], app["p50_ms"],
                         app["p99_ms"], fa["p99_ms"], app["server_cpu_ms_per_vote"], fa["server_cpu_ms_per_vote"],
                         st["server_cpu_ms_per_vote"], f"{app['stored']}/{app['accepted']}", _errors(app)])
            report.bar(f"{backend}, {c} evaluators: BlindPair votes/s ≥ ½ the FastAPI floor's requests/s",
                       ratio is not None and ratio >= 0.5, f"{ratio:.2f} × floor" if ratio is not None else "–")
        report.table(f"{backend}: closed loop, one request per vote ({args.duration:g} s per level after "
                     f"{args.warmup:g} s warm-up)",
                     ["evaluators", "BlindPair votes/s", "FastAPI floor req/s", "BlindPair / FastAPI floor",
                      "Starlette floor req/s", "BlindPair p50 ms", "BlindPair p99 ms", "FastAPI floor p99 ms",
                      "BlindPair CPU ms/vote", "FastAPI floor CPU ms/req", "Starlette floor CPU ms/req",
                      "stored/accepted", "errors"], rows)
        best = max((m["votes_per_s"] or 0 for m in res["reference"].values()), default=0)
        if res["reference"]:
            report.table(f"{backend}: the bursts' reference, closed loop in the {args.burst_flow} flow",
                         ["evaluators", "votes/s", "p99 ms", "vote POST p99 ms", "CPU ms/vote", "stored/accepted"],
                         [[c, m["votes_per_s"], m["p99_ms"], m["post_p99_ms"], m["server_cpu_ms_per_vote"],
                           f"{m['stored']}/{m['accepted']}"] for c, m in res["reference"].items()])
        burst_rows = []
        for n, m in res["burst"].items():
            share = m["votes_per_s"] / best if best else None
            burst_rows.append([n, m["votes_per_s"], share, m["join_p50_ms"], m["join_p99_ms"],
                               m["page_p50_ms"], m["page_p99_ms"], m["post_p50_ms"], m["post_p99_ms"],
                               m["server_cpu_ms_per_vote"],
                               f"{m['stored']}/{m['accepted']}", _errors(m)])
            ok = (share is not None and share >= 0.7 and (m["post_p99_ms"] or 1e9) < 1000 and not _errors(m)
                  and counts_agree(m))
            report.bar(f"{backend}, launch burst of {n}: ≥ 70% of the best level's votes/s, vote POST p99 < 1 s, "
                       "no errors, stored = accepted", ok,
                       f"{share:.0%} of {best:.0f}/s, POST p99 {m['post_p99_ms'] or 0:.0f} ms, {_errors(m)} errors, "
                       f"{m['stored']}/{m['accepted']}" if share is not None else "–")
            if m["errors"]:
                report.notes.append(f"{backend} burst {n} errors: {m['errors']}")
        if burst_rows:
            report.table(f"{backend}: launch burst, evaluators arriving within {args.join_seconds:g} s, then "
                         f"{args.burst_duration:g} s measured from the last arrival",
                         ["evaluators", "votes/s", "of the best closed level", "join p50 ms", "join p99 ms",
                          "pair GET p50 ms", "pair GET p99 ms", "vote POST p50 ms", "vote POST p99 ms",
                          "CPU ms/vote",
                          "stored/accepted", "errors"], burst_rows)
        for rate, m in res["open"].items():
            report.table(f"{backend}: open loop, {rate:g} votes/s for {args.open_duration:g} s "
                         f"({args.pool or int(rate * 10)} evaluators)",
                         ["achieved votes/s", "p50 ms", "p99 ms", "vote POST p99 ms", "CPU ms/vote", "stored/accepted",
                          "errors"],
                         [[m["votes_per_s"], m["p50_ms"], m["p99_ms"], m["post_p99_ms"], m["server_cpu_ms_per_vote"],
                           f"{m['stored']}/{m['accepted']}", _errors(m)]])
            ok = (m["p99_ms"] or 1e9) < 100 and not _errors(m) and counts_agree(m)
            report.bar(f"{backend}, open loop {rate:g} votes/s: p99 < 100 ms, no errors", ok if rate >= 200 else None,
                       f"{m['votes_per_s']:.0f}/s achieved, p99 {m['p99_ms'] or 0:.0f} ms, {_errors(m)} errors")
            if m["errors"]:
                report.notes.append(f"{backend} open-loop errors: {m['errors']}")
        agree = all(counts_agree(m) for part in ("closed", "reference", "burst", "open") for m in res[part].values())
        report.bar(f"{backend}: stored = accepted in every run", agree, "agree" if agree else "MISMATCH")
        report.notes.append(f"{backend}: {res['check_note']}; seeding took {res['seed_seconds']:.1f} s.")
    report.data = {b: {"closed": {f"{k}-{c}": _slim(v) for (k, c), v in r["closed"].items()},
                       "burst": {str(n): _slim(v) for n, v in r["burst"].items()},
                       "reference": {str(n): _slim(v) for n, v in r["reference"].items()},
                       "open": {str(k): _slim(v) for k, v in r["open"].items()}} for b, r in results.items()}


def _slim(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if not k.endswith("latencies")}


def run(args) -> Report:
    report = Report("launch", "Speed under a launch burst and against FastAPI's own floor (issue 16)",
                    "python -m bench.launch", params={k: v for k, v in vars(args).items() if k != "func"})
    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-launch-"))
    results: dict[str, Any] = {}
    try:
        for backend in available_backends(args.backends, report.notes):
            print(f"launch bench on {backend}", flush=True)
            results[backend] = run_backend(backend, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write(report, results, args)
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="seconds-long run at low load (the test suite's size)")
    p.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64, 256])
    p.add_argument("--duration", type=float, default=6.0, help="seconds measured per closed-loop level")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--burst", nargs="*", type=int, default=[256, 512], help="launch bursts: evaluators arriving")
    p.add_argument("--burst-flow", choices=["api", "api1"], default="api",
                   help="the bursts' flow: api (the browser's: fetch the pair, then post the vote; the default) or "
                        "api1 (one request per vote)")
    p.add_argument("--burst-reference", nargs="*", type=int, default=[16, 64],
                   help="closed-loop levels in the bursts' flow, the best of which is the bursts' 70%% reference")
    p.add_argument("--join-seconds", type=float, default=3.0, help="the burst's arrivals are spread over this")
    p.add_argument("--burst-duration", type=float, default=20.0, help="seconds measured after the last arrival")
    p.add_argument("--rate", type=float, nargs="*", default=[200.0, 150.0, 100.0],
                   help="open loop: votes started per second, one run per rate (the bar is on 200)")
    p.add_argument("--open-duration", type=float, default=60.0)
    p.add_argument("--pool", type=int, default=0, help="open loop: evaluators (default rate x 10)")
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--pairs-per-session", type=int, default=20)
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


def tiny_args(argv: list[str] | None = None):
    return parser().parse_args(["--tiny", "--concurrency", "1", "4", "--duration", "1", "--warmup", "0.3",
                                "--burst", "8", "--burst-reference", "4", "--join-seconds", "0.5",
                                "--burst-duration", "1", "--rate", "10",
                                "--open-duration", "2", "--pool", "5", "--prompts", "6", "--pairs-per-session", "3",
                                *(argv or [])])


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.launch", parser, run, argv, tiny_args)


if __name__ == "__main__":
    main(sys.argv[1:])
