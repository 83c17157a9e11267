"""Vote path: the real server on SQLite and PostgreSQL against a bare Starlette floor, closed and open loop.

    python -m bench.vote_path                      # full size (about 20 minutes)
    python -m bench.vote_path --tiny               # seconds, what the test suite runs

For each database: seed a study (2 models, 100 prompts, 100 pairs, the six criteria, attention checks on),
serve it with ``uvicorn --factory app.main:create_app`` (1 worker), drive it from a separate load-generator
process (bench/loadgen.py: GET the pair then POST the answers per vote, through the evaluator API or, with
``--flow html``, the browser's pages), then do the same against the floor, bench/floor_app.py (one row per
request, same server stack, same engine settings, same database). Two more servers show where the gap lies
(bench/http_floor_app.py): the app's own HTTP layer answering the same two requests while
storing one row per request (the minimal vote), and storing nothing. After each
run the stored votes are counted and must equal the accepted ones. Last, the services are timed without HTTP
(bench/vote_services.py). Server CPU time per vote is read from
/proc over the measured window (bench/loadgen.py marks it), so the ratio can be stated independently of the load
generator, which shares the machine's cores.
Optionally ``py-spy`` samples the app server during a saturated run to show where the time goes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Report, percentile, run_cli
from bench.servers import available_backends, uvicorn_server

SECRET = "bench-secret-key-that-is-long-enough-0123456789abcdef"
APP_FACTORY = "app.main:create_app"
FLOOR_FACTORY = "bench.floor_app:create_app"
HTTP_FLOOR_FACTORY = "bench.http_floor_app:create_app"
MINIMAL_VOTE_FACTORY = "bench.http_floor_app:create_storing_app"
# The servers beside BlindPair, in the report's order: (kind, what the report calls it).
FLOORS = (("floor", "floor (Starlette, 1 row per request)"),
          ("minimal", "minimal vote (HTTP layer + 1 row per request)"),
          ("http", "HTTP layer, no database"))


# ---------------------------------------------------------------------------------------------- seeding


def _gif(seed: int, frames: int = 8, size: int = 64) -> bytes:
    """A small animated GIF with texture (the attention-check degradations need real pixels)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    images = [Image.fromarray(np.roll(base, i * 3, axis=1)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=125, loop=0)
    return buf.getvalue()


def configure(database_url: str, data_dir: Path) -> dict[str, str]:
    """Point this process's settings at the benchmark database; return the env for the server process."""
    from app import config, db

    env = {
        "BLINDPAIR_DATABASE_URL": database_url,
        "BLINDPAIR_DATA_DIR": str(data_dir),
        "BLINDPAIR_SECRET_KEY": SECRET,
        "BLINDPAIR_ENVIRONMENT": "development",
        "BENCH_FLOOR_DATABASE_URL": database_url,
    }
    os.environ.update(env)
    config.get_settings.cache_clear()
    db.reset_engine_cache()
    return env


def seed_study(*, n_prompts: int, pairs_per_session: int, attention_checks: bool = True) -> tuple[int, str, str]:
    """A study ready for voting, built with the app's own models and services.

    Returns (study id, invite token, a note on attention checks).
    """
    from app.criteria import DEFAULT_CRITERIA
    from app.db import Base, get_engine, session_scope
    from app.media.storage import store_bytes
    from app.models import Clip, Criterion, Pair, Prompt, Study, StudyModel

    Base.metadata.create_all(get_engine())
    with session_scope() as s:
        study = Study(slug="bench", name="Benchmark study", status="open", votes_per_pair=5,
                      pairs_per_session=pairs_per_session,
                      settings={"seeds": [0], "frames": 8, "width": 64, "height": 64, "fps": 8},
                      # One client address joins every simulated evaluator, so the per-address limits go up.
                      qc={"join_rate_limit_per_minute": 100000, "sessions_per_address": 0})
        s.add(study)
        s.flush()
        models = [StudyModel(study_id=study.id, name=n, preset="", position=i)
                  for i, n in enumerate(("lightning", "animatediff"))]
        s.add_all(models)
        for i, c in enumerate(DEFAULT_CRITERIA):
            s.add(Criterion(study_id=study.id, key=c.key, label=c.label, description=c.description, position=i))
        s.flush()
        for p in range(n_prompts):
            prompt = Prompt(study_id=study.id, external_id=f"p{p:03d}", text=f"benchmark prompt number {p}",
                            theme=("nature", "city", "sports", "fantasy")[p % 4],
                            detail=("short", "medium", "long")[p % 3])
            s.add(prompt)
            s.flush()
            clips = []
            for m in models:
                stored = store_bytes(_gif(p * 2 + m.position))
                clip = Clip(study_id=study.id, model_id=m.id, prompt_id=prompt.id, seed=0, origin="imported",
                            status="done", storage_name=stored.storage_name, sha256=stored.sha256,
                            size_bytes=stored.size_bytes, width=64, height=64, frames=8, fps=8)
                s.add(clip)
                clips.append(clip)
            s.flush()
            s.add(Pair(study_id=study.id, prompt_id=prompt.id, clip_a_id=clips[0].id, clip_b_id=clips[1].id))
        study_id, invite = study.id, study.invite_token
    note = "attention checks: off"
    if attention_checks:
        from app.services.attention import ensure_attention_pairs

        with session_scope() as s:
            made = ensure_attention_pairs(s, study_id=study_id)
        note = f"attention checks: on ({made} check pairs, the app's default rate)"
    return study_id, invite, note


def count_rows(table: str) -> int:
    """Rows in ``table``, read over a DB-API connection in autocommit: no BEGIN IMMEDIATE, so a server that holds
    SQLite's write lock cannot block the count."""
    from app.db import get_engine

    raw = get_engine().raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed table names
        count = int(cur.fetchone()[0])
        raw.rollback()
        return count
    finally:
        raw.close()


# ---------------------------------------------------------------------------------------------- running


def run_loadgen(cfg: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bp-loadgen-") as tmp:
        result_path = Path(tmp) / "result.json"
        args = json.dumps({**cfg, "result_path": str(result_path)})
        out = subprocess.run([sys.executable, "-m", "bench.loadgen", args], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=timeout, check=False)
        if out.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"load generator failed ({out.returncode}):\n{out.stderr[-3000:]}")
        return json.loads(result_path.read_text())


def measure(base: str, proc, *, kind: str, cfg: dict[str, Any], table: str | None) -> dict[str, Any]:
    """One load-generator run against a live server; votes stored are counted around it (``table`` None: the
    HTTP-layer floor, which stores nothing)."""
    before_rows = count_rows(table) if table else 0
    # Generous: joining the open loop's evaluator pool and draining a saturated server both take time.
    timeout = cfg["duration"] + cfg.get("warmup", 1.0) + cfg.get("pool", 0) / 10 + 240
    result = run_loadgen({**cfg, "base_url": base, "kind": kind, "server_pid": proc.pid}, timeout=timeout)
    stored = _settled_count(table) - before_rows if table else None
    lat = result["latencies"]
    seconds = result["seconds"]
    votes_in_window = len(lat)
    return {
        "votes_per_s": votes_in_window / seconds if seconds else None,
        "p50_ms": _ms(percentile(lat, 50)), "p99_ms": _ms(percentile(lat, 99)),
        "page_p50_ms": _ms(percentile(result["page_latencies"], 50)),
        "post_p50_ms": _ms(percentile(result["post_latencies"], 50)),
        "post_p99_ms": _ms(percentile(result["post_latencies"], 99)),
        "join_p50_ms": _ms(percentile(result.get("join_latencies") or [], 50)),
        "join_p99_ms": _ms(percentile(result.get("join_latencies") or [], 99)),
        "page_p99_ms": _ms(percentile(result["page_latencies"], 99)),
        "accepted": result["accepted"], "stored": stored, "errors": result["errors"],
        "server_cpu_ms_per_vote": server_cpu_ms_per_vote(result), "cpu_window": result.get("window_cpu") or {},
        "loadgen_cpu_s": result["loadgen_cpu_seconds"], "joins": result["joins"], "votes_in_window": votes_in_window,
    }


def server_cpu_ms_per_vote(result: dict[str, Any]) -> float | None:
    """The server's CPU per vote over the load generator's measured window (bench/loadgen.py marks it): the
    votes accepted in it and the CPU spent while they were served, joins of evaluators who replace finished ones
    included, the pool's first joins and the warm-up not."""
    window = result.get("window_cpu") or {}
    return window["server_cpu_seconds"] * 1000 / window["votes"] if window.get("votes") else None


def _settled_count(table: str, *, quiet_s: float = 2.0, limit_s: float = 180.0) -> int:
    """The table's rows once the server has stopped adding them: requests a run abandoned (its drain limit)
    may still be queued in the server, and counted after the next run started they were its "stored" (160 more
    votes than accepted in an open loop with no errors, all left over from the saturated run before it)."""
    count, since, deadline = count_rows(table), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = count_rows(table)
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return count


# What an abandoned request looks like in the load generator's errors (bench/lean_http.py's words, and httpx's in
# earlier results): it may have reached the server. "ReadError" also matches the lean client's IncompleteReadError.
ABANDONED = ("not answered within the drain limit", "Server disconnected", "no answer within", "ReadError",
             "ConnectionResetError", "RemoteProtocolError")


def counts_agree(m: dict[str, Any]) -> bool:
    """Stored votes equal accepted ones, except that a request the client abandoned while it was in flight
    (the open loop's drain limit, a dropped connection or a timeout) may still have been stored: at most one per
    abandonment. A server past its capacity may reset a connection whose vote it had already stored. Both
    benchmarks judge their runs by this (bench/launch.py, bench/peer_potato.py)."""
    if m["stored"] is None:  # the HTTP-layer floor stores nothing
        return True
    abandoned = sum(n for e, n in m["errors"].items() if any(a in e for a in ABANDONED))
    return m["stored"] == m["accepted"] or 0 <= m["stored"] - m["accepted"] <= abandoned


def _ratio(m: dict[str, Any] | None, floor: dict[str, Any]) -> float | None:
    """A server's votes/s over the floor's in the same run; None where either is missing."""
    return m["votes_per_s"] / floor["votes_per_s"] if m and m["votes_per_s"] and floor["votes_per_s"] else None


def _stored(m: dict[str, Any]) -> str:
    return "– (stores nothing)" if m["stored"] is None else f"{m['stored']}/{m['accepted']}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def profile_server(base: str, proc, cfg: dict[str, Any], out_dir: Path, seconds: float, *,
                   backend: str) -> dict[str, Any] | None:
    """Sample the app server with py-spy while a saturated closed loop runs; summarise where time goes."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        return None
    raw = out_dir / f"vote_path.{backend}.pyspy.txt"
    spy = subprocess.Popen([pyspy, "record", "--pid", str(proc.pid), "--duration", str(int(seconds)), "--rate", "200",
                            "--format", "raw", "--output", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    run_loadgen({**cfg, "base_url": base, "kind": "app", "duration": seconds, "warmup": 0.0}, timeout=seconds + 120)
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not raw.exists():
        return {"error": (err or b"").decode()[-500:]}
    return summarise_profile(raw)


# Layers, matched from the innermost frame outwards; a sample counts once, for the innermost layer it is in.
DRIVER_LEAVES = ("do_execute", "do_executemany", "do_commit", "do_rollback", "_exec_insertmany_context")
LOOP_LEAVES = ("Runner.run", "run_forever", "run_until_complete")
LAYERS = (
    ("Jinja2 template rendering", ("jinja2/",)),
    ("SQLAlchemy ORM / Core in Python (building SQL, loading rows, unit of work)", ("sqlalchemy/",)),
    ("pydantic / FastAPI (validation, dependency injection, serialisation)", ("fastapi/", "pydantic")),
    ("itsdangerous / cookies / form parsing", ("itsdangerous", "multipart", "http/cookies")),
    ("Starlette / uvicorn / anyio (HTTP, middleware, threadpool hand-off)", ("starlette/", "uvicorn/", "anyio/")),
    ("BlindPair code itself (app/)", ("app/",)),
)
IDLE_LEAVES = ("wait (threading.py", "_worker (concurrent", "select (selectors.py", "get (queue.py",
               "_wait_for_tstate_lock")


def _layer(frames: list[str]) -> str:
    leaf = frames[-1] if frames else ""
    # psycopg runs its protocol in Python (its frames sit above libpq), sqlite3 entirely in C under do_execute.
    if any(x in leaf for x in DRIVER_LEAVES) or any("psycopg" in f for f in frames):
        return "database: SQL running in SQLite / libpq (driver execute, commit)"
    if any(x in leaf for x in LOOP_LEAVES):
        return "event loop in C (uvloop sockets, httptools parsing)"
    for f in reversed(frames):
        if _app_file(f):
            return "BlindPair code itself (app/)"
        for name, needles in LAYERS:
            if any(nd in f for nd in needles):
                return name
    return "other (interpreter, stdlib)"


# py-spy prints a file relative to the sys.path entry it was found under, often just its base name.
APP_FILES = {p.name for p in (REPO_ROOT / "app").rglob("*.py") if p.name != "__init__.py"}


def _app_file(frame: str) -> str | None:
    where = frame.rpartition(" (")[2].rsplit(":", 1)[0]
    if where.startswith("app/") or "/app/" in where:
        return where.split("app/", 1)[1]
    return where if "/" not in where and where in APP_FILES else None


def _app_function(frames: list[str]) -> str:
    """The innermost BlindPair function on the stack (what the product was doing at that sample)."""
    for f in reversed(frames):
        where = _app_file(f)
        if where:
            return f"{f.partition(' (')[0]} ({where})"
    return "outside app code (server, framework, thread hand-off)"


def summarise_profile(raw: Path) -> dict[str, Any]:
    """Collapsed stacks (``a;b;c count``) -> share of busy samples per layer, per BlindPair function, per leaf."""
    layers: Counter = Counter()
    functions: Counter = Counter()
    leaves: Counter = Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        leaf = frames[-1] if frames else ""
        if any(w in leaf for w in IDLE_LEAVES):  # threads parked waiting for work are idle, not cost
            idle += n
            continue
        total += n
        leaves[leaf] += n
        layers[_layer(frames)] += n
        functions[_app_function(frames)] += n
    def shares(c: Counter, k: int | None = None) -> list[tuple[str, float]]:
        return [(name, v / total) for name, v in c.most_common(k)] if total else []
    return {"busy_samples": total, "idle_samples": idle, "layers": shares(layers),
            "app_functions": shares(functions, 15), "top_leaves": shares(leaves, 12), "raw": str(raw)}


@contextmanager
def database(backend: str, tmp: Path):
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'bench.sqlite'}"
        return
    from tests.support.servers import postgres_server

    with postgres_server() as url:
        yield url


def run_backend(backend: str, args, tmp: Path, report: Report) -> dict[str, Any]:
    out: dict[str, Any] = {"closed": {}, "open": {}}
    with database(backend, tmp) as url:
        data_dir = tmp / f"data-{backend}"
        env = configure(url, data_dir)
        t0 = time.perf_counter()
        study_id, invite, check_note = seed_study(n_prompts=args.prompts, pairs_per_session=args.pairs_per_session)
        out["seed_seconds"] = time.perf_counter() - t0
        out["check_note"] = check_note
        closed = {"mode": "closed", "duration": args.duration, "warmup": args.warmup, "invite": invite,
                  "flow": args.flow}
        opened = {"mode": "open", "duration": args.open_duration, "rate": args.rate, "invite": invite,
                  "flow": args.flow,
                  "pool": args.pool or args.rate * 10}
        servers = (("app", APP_FACTORY, "/static/css/app.css", "votes"),
                   ("floor", FLOOR_FACTORY, "/ping", "bench_floor_votes"),
                   ("minimal", MINIMAL_VOTE_FACTORY, "/ping", "bench_http_floor_votes"),
                   ("http", HTTP_FLOOR_FACTORY, "/ping", None))
        for kind, factory, ping, table in servers:
            with uvicorn_server(factory, env, tmp / f"{backend}-{kind}.log", ping=ping) as (base, proc):
                for c in args.concurrency:
                    out["closed"][(kind, c)] = measure(base, proc, kind=kind, cfg={**closed, "concurrency": c},
                                                       table=table)
                    print(f"  {backend} {kind} closed c={c}: {_line(out['closed'][(kind, c)])}", flush=True)
                out["open"][kind] = measure(base, proc, kind=kind, cfg=opened, table=table)
                print(f"  {backend} {kind} open {args.rate}/s: {_line(out['open'][kind])}", flush=True)
                if kind == "app":
                    # The bar's rate may be beyond one process: sweep lower rates for what it sustains.
                    for rate in args.sweep_rates:
                        cfg = {**opened, "rate": rate, "duration": args.sweep_duration,
                               "pool": args.pool or int(rate * 10)}
                        out.setdefault("sweep", {})[rate] = m = measure(base, proc, kind=kind, cfg=cfg, table=table)
                        print(f"  {backend} app open {rate}/s: {_line(m)}", flush=True)
                if kind == "app" and args.profile_seconds > 0:
                    conc = max(args.concurrency)
                    out["profile"] = profile_server(base, proc, {**closed, "concurrency": min(conc, 16)},
                                                    report_dir(args), args.profile_seconds, backend=backend)
        if args.in_process_votes > 0:
            from bench import vote_services

            out["in_process"] = vote_services.measure(study_id, invite, n_votes=args.in_process_votes,
                                                      n_statement_runs=args.statement_runs)
            print(f"  {backend} in-process: {out['in_process']}", flush=True)
    return out


def _line(m: dict[str, Any]) -> str:
    return (f"{m['votes_per_s']:.0f} votes/s, p50 {m['p50_ms'] or 0:.1f} ms, p99 {m['p99_ms'] or 0:.1f} ms, "
            f"accepted {m['accepted']} stored {m['stored']}, errors {m['errors'] or 0}")


def report_dir(args) -> Path:
    return Path(args.results_dir)


def run(args) -> Report:
    cmd = "python -m bench.vote_path" + (" --tiny" if args.tiny else "")
    report = Report("vote_path", "Vote path: the real server against a bare Starlette floor", cmd,
                    params={k: v for k, v in vars(args).items() if k != "func"})
    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-vote-"))
    results: dict[str, Any] = {}
    try:
        for backend in available_backends(args.backends, report.notes):
            print(f"vote path on {backend}", flush=True)
            results[backend] = run_backend(backend, args, tmp, report)
    finally:
        if args.keep:
            print(f"kept server logs and databases in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    _write(report, results, args)
    return report


def _write(report: Report, results: dict[str, Any], args) -> None:
    ok_count = True
    for backend, res in results.items():
        rows, latency_rows, minimal = [], [], []
        for c in args.concurrency:
            app, floor = res["closed"][("app", c)], res["closed"][("floor", c)]
            ratio = _ratio(app, floor)
            others = [res["closed"].get((kind, c)) for kind, _name in FLOORS[1:]]
            other_ratios = [_ratio(m, floor) for m in others]
            if other_ratios[0] is not None:
                minimal.append(other_ratios[0])
            rows.append([c, app["votes_per_s"], ratio, floor["votes_per_s"],
                         *[x for m, r in zip(others, other_ratios, strict=True) for x in (m and m["votes_per_s"], r)],
                         _stored(app), sum(app["errors"].values())])
            latency_rows.append([c, *[x for m in (app, floor, others[0]) for x in
                                      ((m["p50_ms"], m["p99_ms"]) if m else (None, None))],
                                 *[m and m["server_cpu_ms_per_vote"] for m in (app, floor, *others)]])
            for m in (app, floor, *others):
                ok_count &= m is None or counts_agree(m)
            report.bar(f"{backend}, {c} evaluators: votes/s ≥ ½ the floor's", ratio is not None and ratio >= 0.5,
                       f"{ratio:.2f} × floor" if ratio is not None else "–")
        title = f"{backend}: closed loop ({args.duration:g} s per level after {args.warmup:g} s warm-up)"
        report.table(title, ["evaluators", "BlindPair votes/s", "ratio to floor", "floor req/s", "minimal vote votes/s",
                             "minimal / floor", "HTTP layer votes/s", "HTTP layer / floor", "stored/accepted",
                             "errors"], rows)
        report.table(f"{backend}: latency per vote and server CPU per vote, same runs",
                     ["evaluators", "p50 ms", "p99 ms", "floor p50", "floor p99", "minimal p50", "minimal p99",
                      "CPU ms/vote", "floor CPU ms/req", "minimal CPU ms/vote", "HTTP layer CPU ms/vote"],
                     latency_rows)
        if minimal:
            report.notes.append(
                f"{backend}: 'minimal vote' and 'HTTP layer' are bench/http_floor_app.py: the same two requests per "
                f"vote ({args.flow} flow) through the app's own FastAPI stack (middleware, models, credential check, "
                "rating slot), the "
                "first storing one row per request like the floor, the second storing nothing. The minimal vote "
                f"reaches {min(minimal):.2f}–{max(minimal):.2f} × the floor: "
                + ("a vote writes at least this much, so no vote path on this stack can reach the ½ bar here."
                   if max(minimal) < 0.5 else
                   "the ½ bar is within this stack's reach at some levels."))
        app, floor = res["open"]["app"], res["open"]["floor"]
        for name, m in res["open"].items():
            ok_count &= counts_agree(m)
            if m["stored"] is not None and m["stored"] != m["accepted"]:
                report.notes.append(
                    f"{backend} open loop, {name}: {m['stored'] - m['accepted']} more votes stored than answered: "
                    "requests the client abandoned at the drain limit while the server was still working on them.")
        report.table(
            f"{backend}: open loop, {args.rate:g} votes/s for {args.open_duration:g} s "
            f"({args.pool or args.rate * 10} evaluators)",
            ["server", "achieved votes/s", "p50 ms", "p99 ms", "page GET p50", "vote POST p50", "POST p99",
             "server CPU ms/vote", "stored/accepted", "errors"],
            [[name, m["votes_per_s"], m["p50_ms"], m["p99_ms"], m["page_p50_ms"], m["post_p50_ms"],
              m["post_p99_ms"], m["server_cpu_ms_per_vote"], _stored(m),
              sum(m["errors"].values())]
             for name, m in (("BlindPair", app), *[(label, res["open"].get(kind)) for kind, label in FLOORS])
             if m is not None])
        sweep = res.get("sweep", {})
        if sweep:
            for m in sweep.values():
                ok_count &= counts_agree(m)
            report.table(
                f"{backend}: BlindPair in open loop at lower rates ({args.sweep_duration:g} s each)",
                ["offered votes/s", "achieved votes/s", "p50 ms", "p99 ms", "vote POST p99", "server CPU ms/vote",
                 "stored/accepted", "errors"],
                [[rate, m["votes_per_s"], m["p50_ms"], m["p99_ms"], m["post_p99_ms"], m["server_cpu_ms_per_vote"],
                  f"{m['stored']}/{m['accepted']}", sum(m["errors"].values())] for rate, m in sweep.items()])
            fine = [rate for rate, m in sweep.items()
                    if m["p99_ms"] is not None and m["p99_ms"] < 100 and not sum(m["errors"].values())]
            report.notes.append(f"{backend}: highest swept rate served with p99 < 100 ms and no errors: "
                                + (f"{max(fine):g} votes/s" if fine else "none of those swept"))
        errs = sum(app["errors"].values())
        report.bar(f"{backend}, open loop {args.rate:g}/s: p99 < 100 ms and no errors",
                   app["p99_ms"] is not None and app["p99_ms"] < 100 and errs == 0,
                   f"p99 {app['p99_ms']:.0f} ms, {errs} errors" if app["p99_ms"] is not None else f"{errs} errors")
        if app["errors"]:
            report.notes.append(f"{backend} open-loop errors: {app['errors']}")
        report.notes.append(f"{backend}: {res['check_note']}; seeding took {res['seed_seconds']:.1f} s.")
        inproc = res.get("in_process")
        if inproc:
            report.table(
                f"{backend}: the services without HTTP (bench/vote_services.py, {inproc['votes']} votes in-process)",
                ["CPU ms per vote", "SQL statements per vote", "one statement via the session, µs",
                 "via its connection, µs", "via the DB-API cursor, µs"],
                [[inproc["cpu_ms_per_vote"], inproc["statements_per_vote"], inproc["session_us"],
                  inproc["connection_us"], inproc["dbapi_us"]]])
        prof = res.get("profile")
        if prof and "layers" in prof:
            report.table(f"{backend}: where the app server's busy time goes, by layer (py-spy, "
                         f"{prof['busy_samples']} busy samples)", ["layer (innermost on the stack)", "share"],
                         [[k, f"{v:.0%}"] for k, v in prof["layers"]])
            report.table(f"{backend}: by the innermost BlindPair function on the stack", ["function (module)", "share"],
                         [[k.replace("|", "/")[:110], f"{v:.1%}"] for k, v in prof["app_functions"]])
        elif prof:
            report.notes.append(f"{backend}: py-spy failed: {prof.get('error')}")
    report.bar("stored votes == accepted votes in every run (plus at most the abandoned in-flight ones)", ok_count,
               "agree" if ok_count else "MISMATCH")
    report.data = {b: {"closed": {f"{k}-{c}": v for (k, c), v in r["closed"].items()}, "open": r["open"],
                       "profile": r.get("profile"), "in_process": r.get("in_process"),
                       "seed_seconds": r["seed_seconds"]} for b, r in results.items()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="seconds-long run at low load (the test suite's size)")
    p.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    p.add_argument("--flow", choices=["api", "html"], default="api",
                   help="api: the evaluator JSON API; html: the browser's pages and form post (see bench/loadgen.py)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64, 256])
    p.add_argument("--duration", type=float, default=6.0, help="seconds measured per closed-loop level")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=200.0, help="open loop: votes started per second")
    p.add_argument("--open-duration", type=float, default=60.0, help="open loop: seconds")
    p.add_argument("--pool", type=int, default=0, help="open loop: evaluators (default rate x 10)")
    p.add_argument("--sweep-rates", type=float, nargs="*", default=[25.0, 50.0, 100.0, 150.0],
                   help="open loop at these lower rates too (BlindPair only), to find what one process sustains")
    p.add_argument("--sweep-duration", type=float, default=20.0, help="seconds per swept rate")
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--pairs-per-session", type=int, default=20)
    p.add_argument("--profile-seconds", type=float, default=8.0, help="py-spy sampling of the app; 0 = off")
    p.add_argument("--in-process-votes", type=int, default=600,
                   help="votes cast in-process after the servers (the services without HTTP); 0 = off")
    p.add_argument("--statement-runs", type=int, default=5000, help="timed runs of one statement, per way")
    p.add_argument("--keep", action="store_true", help="keep the server logs and SQLite files (printed path)")
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


def tiny_args(argv: list[str] | None = None):
    return parser().parse_args(["--tiny", "--concurrency", "1", "4", "--duration", "1", "--warmup", "0.3",
                                "--rate", "10", "--open-duration", "2", "--pool", "5", "--prompts", "6",
                                "--pairs-per-session", "3", "--profile-seconds", "0", "--sweep-rates", "5",
                                "--in-process-votes", "10", "--statement-runs", "50",
                                "--sweep-duration", "1", *(argv or [])])


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.vote_path", parser, run, argv, tiny_args)

if __name__ == "__main__":
    main(sys.argv[1:])
