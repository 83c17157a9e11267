"""Against a peer (issue 16, bar 4): BlindPair beside Potato serving the same pairwise task, same load generator.

    python -m bench.peer_potato --install          # once: Potato into its own venv, .tools/peer-potato (network)
    python -m bench.peer_potato                    # both servers, closed loop 1/16/64/256 + one open-loop rate
    python -m bench.peer_potato --tiny             # seconds, what the test suite runs when the peer venv exists

The peer is Potato (``potato-annotation`` from PyPI, pinned below), the annotation tool with a built-in pairwise
comparison scheme. It lives in its own virtualenv so the project's locked environment never changes, and is
served the way its own deploy command serves it: gunicorn, one worker, ``--threads 8`` (``potato deploy up``'s
default; its preflight refuses more than one worker because Potato keeps users and items in process memory).

The task is made as close to BlindPair's as Potato's config allows: the same number of prompts, each item shows
the same two seeded 64x64 GIFs side by side (``instance_display`` image fields, files from its ``/media`` route),
and one ``pairwise`` scheme in ``multi_dimension`` mode asks BlindPair's six criteria, each answered left (A),
right (B) or tie; each annotator gets ``--pairs-per-session`` items, like a BlindPair session. Evaluators arrive
the way a crowd platform sends them: BlindPair's invite join, Potato's ``login.type: url_direct``
(``/?PROLIFIC_PID=<id>``). Per vote the load generator (bench/loadgen.py) does what each tool's page does in a
browser: BlindPair's html flow (GET /e/pair, POST /e/vote) is the comparable one, since both render the page on
the server and post the answers from it; the JSON API flow is shown beside it for reference. Votes stored are
read back after every run: BlindPair's from its database, Potato's from the ``user_state.json`` it writes per
annotator (an item counts when all six answers are there), and must equal the votes the generator saw accepted.

What keeps the comparison imperfect (said again in the report):
- Potato stores each annotator's whole state as a JSON file rewritten on every save (plus an append-only history
  file); BlindPair writes rows into SQLite in a transaction. Different durability, different cost.
- Potato has no blinding or per-vote randomisation of sides, no attention checks, no one-vote-per-assignment
  token, no CSRF; BlindPair does all of that on every vote (attention checks on, as in bench/vote_path.py).
- A Potato item is three requests (page, save, navigate: what its annotation.js does), a BlindPair vote two.
- Potato logs at INFO on every request by default (to a file here); BlindPair's server runs at warning level.
- The servers differ by design: gunicorn gthread (8 threads, WSGI) against uvicorn (one process, ASGI); both one
  process, both given the same backlog.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Report, percentile, run_cli
from bench.servers import wait_until_serving
from bench.vote_path import (
    APP_FACTORY,
    _gif,
    _ms,
    configure,
    count_rows,
    counts_agree,
    run_loadgen,
    seed_study,
    server_cpu_ms_per_vote,
)
from tests.support.servers import free_port, stop_process

POTATO_VERSION = "2.12.1"
GUNICORN_VERSION = "27.0.1"
PEER_VENV = REPO_ROOT / ".tools" / "peer-potato"  # ignored by .gitignore (/.tools/)
SCHEMA = "criteria"
POTATO_ANSWERS = {"A", "B", "tie"}


# ---------------------------------------------------------------------------------------------- the peer's venv


def peer_python(venv: Path = PEER_VENV) -> Path:
    return venv / "bin" / "python"


def peer_unavailable_reason(venv: Path = PEER_VENV) -> str | None:
    """None when the peer venv has the pinned Potato and gunicorn; else what is missing and how to get it."""
    if not peer_python(venv).exists():
        return f"no peer venv at {venv}: run `python -m bench.peer_potato --install` (needs PyPI)"
    out = subprocess.run([str(peer_python(venv)), "-c",
                          "from importlib.metadata import version as v; print(v('potato-annotation'), v('gunicorn'))"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return f"the peer venv {venv} lacks potato-annotation or gunicorn: run `python -m bench.peer_potato --install`"
    have = out.stdout.split()
    if have != [POTATO_VERSION, GUNICORN_VERSION]:
        return (f"the peer venv has potato-annotation {have[0]}, gunicorn {have[1]}; this benchmark pins "
                f"{POTATO_VERSION} and {GUNICORN_VERSION}: run `python -m bench.peer_potato --install`")
    return None


def install_peer(venv: Path = PEER_VENV) -> None:
    """``python -m venv`` + pip install of the pinned versions. Never touches the project's .venv."""
    base = getattr(sys, "_base_executable", sys.executable)
    if not peer_python(venv).exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(peer_python(venv)), "-m", "pip", "install", "--quiet",
                    f"potato-annotation=={POTATO_VERSION}", f"gunicorn=={GUNICORN_VERSION}"], check=True)
    reason = peer_unavailable_reason(venv)
    if reason:
        raise SystemExit(f"installed, but: {reason}")
    print(f"peer ready: potato-annotation {POTATO_VERSION}, gunicorn {GUNICORN_VERSION} in {venv}")


# ---------------------------------------------------------------------------------------------- the task


def write_task(task_dir: Path, *, n_items: int, per_user: int, criteria: list[tuple[str, str]]) -> Path:
    """A Potato project for BlindPair's pairwise task; returns its config path.

    The config is written as JSON, which is YAML (Potato reads it with yaml.safe_load). Each item's two GIFs are
    the ones bench/vote_path.py seeds for the same prompt, served from the project's media directory.
    """
    media = task_dir / "media"
    media.mkdir(parents=True, exist_ok=True)
    with open(task_dir / "data.jsonl", "w") as f:
        for p in range(n_items):
            for side in (0, 1):
                (media / f"p{p:03d}_{side}.gif").write_bytes(_gif(p * 2 + side))
            f.write(json.dumps({"id": f"p{p:03d}", "text": f"benchmark prompt number {p}",
                                "left": f"/media/p{p:03d}_0.gif", "right": f"/media/p{p:03d}_1.gif"}) + "\n")
    config = {
        "annotation_task_name": "BlindPair peer benchmark",
        "task_dir": ".",
        "output_annotation_dir": "annotation_output/",
        "data_files": ["data.jsonl"],
        "item_properties": {"id_key": "id", "text_key": "text"},
        "login": {"type": "url_direct", "url_argument": "PROLIFIC_PID"},
        "max_annotations_per_user": per_user,
        "instance_display": {"layout": {"direction": "horizontal"},
                             "fields": [{"key": "left", "type": "image", "label": "Left"},
                                        {"key": "right", "type": "image", "label": "Right"}]},
        "annotation_schemes": [{
            "annotation_type": "pairwise", "name": SCHEMA, "description": "Which clip is better?",
            "mode": "multi_dimension", "allow_tie": True, "tie_label": "Tie", "labels": ["Left", "Right"],
            "dimensions": [{"name": key, "description": text} for key, text in criteria],
        }],
    }
    path = task_dir / "config.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def count_potato_stored(output_dir: Path, dimensions: list[str], *, attempts: int = 5) -> int:
    """Items stored with every dimension answered, over all annotators' ``user_state.json``.

    Potato rewrites an annotator's file on every save; a file caught mid-write is read again shortly after.
    """
    total = 0
    for state_file in sorted(output_dir.glob("*/user_state.json")):
        for attempt in range(attempts):
            try:
                state = json.loads(state_file.read_text())
                break
            except (OSError, json.JSONDecodeError):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)
        for labels in (state.get("instance_id_to_label_to_value") or {}).values():
            answered = {label["name"] for label, value in labels
                        if label.get("schema") == SCHEMA and value in POTATO_ANSWERS}
            total += set(dimensions) <= answered
    return total


@contextmanager
def potato_server(config: Path, log_path: Path, *, threads: int, venv: Path = PEER_VENV,
                  timeout: float = 90) -> Iterator[tuple[str, subprocess.Popen]]:
    """Potato under gunicorn on a free loopback port, as its deploy image runs it; yields (base URL, master)."""
    port = free_port()
    log = open(log_path, "ab")  # noqa: SIM115 - closed below
    # gunicorn's keep-alive is set to uvicorn's default (5 s; gunicorn's own is 2 s), so neither server closes idle
    # connections sooner than the other. PYTHONPATH is emptied: the peer must not import this repository's code.
    proc = subprocess.Popen(
        [str(venv / "bin" / "gunicorn"), "--workers", "1", "--threads", str(threads), "--worker-class", "gthread",
         "--bind", f"127.0.0.1:{port}", "--backlog", "4096", "--timeout", "120", "--keep-alive", "5",
         f"potato.flask_server:create_app({str(config)!r})"],
        cwd=config.parent, env={**os.environ, "POTATO_NONINTERACTIVE": "1", "PYTHONPATH": ""},
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base + "/health", "Potato (gunicorn)", log_path, timeout=timeout, interval=0.2)
        yield base, proc
    finally:
        stop_process(proc, timeout=30)  # SIGTERM: gunicorn's graceful shutdown lets requests in flight finish
        log.close()


# ---------------------------------------------------------------------------------------------- measuring


def measure(base: str, proc: subprocess.Popen, *, kind: str, cfg: dict[str, Any],
            count: Callable[[], int]) -> dict[str, Any]:
    """One load-generator run; the same arithmetic for both tools (stored counted around the run)."""
    before = count()
    timeout = cfg["duration"] + cfg.get("warmup", 1.0) + cfg.get("pool", 0) / 10 + 240
    # Potato's CPU is its process tree's (gunicorn's worker is a child of its master).
    result = run_loadgen({**cfg, "base_url": base, "kind": kind, "server_pid": proc.pid, "server_tree": True},
                         timeout=timeout)
    time.sleep(0.2)  # an abandoned request may still be finishing its write
    stored = count() - before
    lat, seconds = result["latencies"], result["seconds"]
    return {
        "votes_per_s": len(lat) / seconds if seconds else None,
        "p50_ms": _ms(percentile(lat, 50)), "p99_ms": _ms(percentile(lat, 99)),
        "page_p50_ms": _ms(percentile(result["page_latencies"], 50)),
        "post_p50_ms": _ms(percentile(result["post_latencies"], 50)),
        "post_p99_ms": _ms(percentile(result["post_latencies"], 99)),
        "accepted": result["accepted"], "stored": stored, "errors": result["errors"], "joins": result["joins"],
        "server_cpu_ms_per_vote": server_cpu_ms_per_vote(result),
        "loadgen_cpu_s": result["loadgen_cpu_seconds"],
    }


def _line(m: dict[str, Any]) -> str:
    return (f"{m['votes_per_s'] or 0:.0f} votes/s, p50 {m['p50_ms'] or 0:.1f} ms, p99 {m['p99_ms'] or 0:.1f} ms, "
            f"accepted {m['accepted']} stored {m['stored']}, errors {m['errors'] or 0}")


Runner = Callable[[dict[str, Any]], dict[str, Any]]


def start_blindpair(stack: ExitStack, args, tmp: Path) -> tuple[dict[str, Runner], str]:
    """The real app on SQLite with bench/vote_path.py's study; one runner per flow, all on the same server."""
    env = configure(f"sqlite:///{tmp / 'blindpair.sqlite'}", tmp / "data")
    _study, invite, note = seed_study(n_prompts=args.prompts, pairs_per_session=args.pairs_per_session)
    from bench.servers import uvicorn_server

    base, proc = stack.enter_context(uvicorn_server(APP_FACTORY, env, tmp / "blindpair.log",
                                                    ping="/static/css/app.css"))

    def runner(flow: str) -> Runner:
        return lambda cfg: measure(base, proc, kind="app", cfg={**cfg, "invite": invite, "flow": flow},
                                   count=lambda: count_rows("votes"))

    return {f"blindpair-{flow}": runner(flow) for flow in args.flows}, note


def start_potato(stack: ExitStack, args, tmp: Path) -> Runner:
    from app.criteria import DEFAULT_CRITERIA

    criteria = [(c.key, c.description) for c in DEFAULT_CRITERIA]
    config = write_task(tmp / "potato", n_items=args.prompts, per_user=args.pairs_per_session, criteria=criteria)
    output = config.parent / "annotation_output"
    base, proc = stack.enter_context(potato_server(config, tmp / "potato.log", threads=args.potato_threads))
    runs = iter(range(10**6))
    # Worker ids are fresh for every run ("r<run>-<n>"): Potato keeps a returning worker's finished session.
    return lambda cfg: measure(base, proc, kind="potato", cfg={**cfg, "invite": f"r{next(runs)}-", "flow": "html"},
                               count=lambda: count_potato_stored(output, [k for k, _ in criteria]))


def run_levels(runners: dict[str, Runner], args) -> dict[str, dict[str, Any]]:
    """Every level for every tool, the tools taking turns within a level: on a machine shared with other work,
    the runs compared with each other are then seconds apart, not minutes."""
    results: dict[str, dict[str, Any]] = {key: {} for key in runners}
    # Untimed first votes: each server's first requests compile templates and fill caches (Potato's first page
    # took over a second), which is start-up, not the vote path. Still counted: stored must equal accepted.
    plan = [("warmup", {"mode": "closed", "duration": args.server_warmup, "warmup": 0.0, "concurrency": 4})]
    plan += [(f"closed-{c}", {"mode": "closed", "duration": args.duration, "warmup": args.warmup, "concurrency": c})
             for c in args.concurrency]
    plan.append(("open", {"mode": "open", "duration": args.open_duration, "rate": args.rate,
                          "pool": args.pool or int(args.rate * 10)}))
    for level, cfg in plan:
        for key, run_one in runners.items():
            earlier = [m for lvl, m in results[key].items() if lvl.startswith("closed-")]
            if earlier and not earlier[-1]["accepted"]:
                continue  # nothing accepted at the last level: more evaluators would only pile up timeouts
            m = results[key][level] = run_one(cfg)
            print(f"  {level:>11} {key:>15}: {_line(m)}", flush=True)
    return results


def run(args) -> Report:
    cmd = "python -m bench.peer_potato" + (" --tiny" if args.tiny else "")
    report = Report("peer_potato", f"Against a peer: Potato {POTATO_VERSION} (issue 16)", cmd,
                    params={k: v for k, v in vars(args).items() if k != "func"})
    reason = peer_unavailable_reason()
    if reason:
        raise SystemExit(reason)
    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-peer-"))
    try:
        with ExitStack() as stack:
            runners: dict[str, Runner] = {"potato": start_potato(stack, args, tmp)}
            blindpair, note = start_blindpair(stack, args, tmp)
            runners.update(blindpair)
            results = run_levels(runners, args)
    finally:
        if args.keep:
            print(f"kept logs, databases and Potato's project in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    _write(report, results, args, note)
    return report


def _write(report: Report, results: dict[str, Any], args, check_note: str) -> None:
    potato = results["potato"]
    names = [("potato", "Potato (html)"), *[(f"blindpair-{f}", f"BlindPair ({f})") for f in args.flows]]
    levels = [f"closed-{c}" for c in args.concurrency] + ["open"]
    rows = []
    for level in levels:
        for key, label in names:
            m = results[key].get(level)
            if m is None:
                continue
            rows.append([level.replace("closed-", "closed, ") if level != "open" else f"open, {args.rate:g}/s",
                         label, m["votes_per_s"], m["p50_ms"], m["p99_ms"], m["post_p99_ms"],
                         m["server_cpu_ms_per_vote"],
                         m["loadgen_cpu_s"] * 1000 / m["accepted"] if m["accepted"] else None,
                         f"{m['stored']}/{m['accepted']}", sum(m["errors"].values())])
    report.table(f"Closed loop ({args.duration:g} s per level after {args.warmup:g} s warm-up) and open loop "
                 f"({args.open_duration:g} s); one vote = page + submit",
                 ["load", "server", "votes/s", "p50 ms", "p99 ms", "submit p99 ms", "server CPU ms/vote",
                  "load generator CPU ms/vote", "stored/accepted", "errors"], rows)
    # The bar: the comparable (html) flow, where both tools ran the level.
    comparable = results.get("blindpair-html") or results[f"blindpair-{args.flows[0]}"]
    verdicts = []
    for level in levels:
        bp, pt = comparable.get(level), potato.get(level)
        if not bp or not pt:
            continue
        ratio = bp["votes_per_s"] / pt["votes_per_s"] if pt["votes_per_s"] else None
        cpu = (pt["server_cpu_ms_per_vote"] / bp["server_cpu_ms_per_vote"]
               if pt["server_cpu_ms_per_vote"] and bp["server_cpu_ms_per_vote"] else None)
        cpu_text = f"; server CPU per vote {cpu:.1f}x less" if cpu else ""
        # No vote of Potato's inside the window has no p99: any BlindPair p99 is then the better one.
        p99_ok = bp["p99_ms"] is not None and (pt["p99_ms"] is None or bp["p99_ms"] <= pt["p99_ms"])
        clean = not sum(bp["errors"].values())
        if level == "open":  # both are offered the same rate: the open loop compares latency, not capacity
            passed = p99_ok and clean and (bp["votes_per_s"] or 0) >= 0.95 * args.rate
            measured = (f"BlindPair {bp['votes_per_s'] or 0:.0f}/s p99 {bp['p99_ms'] or 0:.0f} ms; Potato "
                        f"{pt['votes_per_s'] or 0:.0f}/s p99 {pt['p99_ms'] or 0:.0f} ms{cpu_text}")
            report.bar(f"open loop {args.rate:g}/s: BlindPair keeps the rate, p99 ≤ Potato's, no errors", passed,
                       measured)
        else:
            # No Potato vote inside the window: a ratio to zero decides nothing (at 256 evaluators joining and
            # queueing fill the window for both tools), so the level is reported, not judged.
            passed = (p99_ok and clean and ratio >= 2) if ratio is not None else None
            measured = (f"{ratio:.2f}x ({bp['votes_per_s']:.1f} vs {pt['votes_per_s']:.1f}/s); p99 "
                        f"{bp['p99_ms'] or 0:.0f} vs {pt['p99_ms'] or 0:.0f} ms{cpu_text}" if ratio is not None else
                        f"not decided: no Potato vote finished inside the {args.duration:g} s window "
                        f"(BlindPair {bp['votes_per_s']:.1f}/s){cpu_text}")
            report.bar(f"{level.replace('closed-', '')} evaluators: BlindPair ≥ 2x Potato's votes/s at ≤ its p99",
                       passed, measured)
        verdicts.append(passed)
    agree = all(counts_agree(m) for r in results.values() for m in r.values())
    report.bar("stored == accepted in every run, both tools (plus at most the abandoned in-flight ones)", agree,
               "agree" if agree else "MISMATCH")
    skipped = [lvl for lvl in levels if lvl not in potato]
    if skipped:
        report.notes.append(f"Potato accepted nothing at the level before, so these were not run: "
                            f"{', '.join(skipped)}.")
    for key, label in names:
        errs = {lvl: m["errors"] for lvl, m in results[key].items() if m["errors"]}
        if errs:
            report.notes.append(f"{label} errors: {errs}")
        extra = {lvl: m["stored"] - m["accepted"] for lvl, m in results[key].items() if m["stored"] != m["accepted"]}
        if extra:
            report.notes.append(f"{label}: more stored than answered {extra}: requests whose connection broke or "
                                "that the client abandoned, which the server had already written.")
    report.notes += [
        f"Same task: {args.prompts} prompts, two 64x64 8-frame GIFs each, the six criteria (left/right/tie), "
        f"{args.pairs_per_session} items per evaluator session; a finished evaluator is replaced by a new one. "
        f"BlindPair: uvicorn, one process, SQLite; {check_note}. Potato {POTATO_VERSION}: "
        f"gunicorn {GUNICORN_VERSION}, one worker, {args.potato_threads} threads (its deploy default), keep-alive "
        "5 s (uvicorn's), state in JSON files per annotator. Each level runs the tools in turn, seconds apart.",
        "BlindPair's html flow is the comparable one (both render the page on the server and post the form's "
        "answers); the bar is judged on it. A Potato vote is three requests (GET /annotate, POST /updateinstance, "
        "POST /annotate next_instance: what its annotation.js sends), a BlindPair html vote two (GET /e/pair, "
        "POST /e/vote). 'submit p99' is the post part alone. The API flow is for reference.",
        f"The open loop offers {args.rate:g} votes/s, a rate chosen below both tools' closed-loop best on this "
        "machine, so it compares latency under the same load; the closed loop compares capacity.",
        "Not like for like: Potato has no blinding or side randomisation, no attention checks, no one-time "
        "assignment token or CSRF check, logs every request at INFO, and rewrites the annotator's whole state "
        "file per save; BlindPair does all the former on every vote and stores rows in a SQLite transaction.",
        "Server CPU per vote is the server process tree's CPU time (/proc) over the votes accepted in the measured "
        "window (the load generator marks both at its edges: joins and warm-up before it are not charged). The load "
        "generator (and whatever else runs) shares the cores, so votes/s is bounded by the machine and the ratio "
        "of votes/s understates the ratio of server work; CPU per vote does not depend on it. Where the load "
        "generator's CPU per vote passes the server's (many evaluators: joins, connection handling), it is the "
        "generator and the machine that set votes/s, for both tools alike.",
    ]
    report.data = results
    report.data["bar_levels_passed"] = verdicts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--install", action="store_true", help="create the peer venv and pip install Potato, then stop")
    p.add_argument("--tiny", action="store_true", help="seconds-long run at low load (the test suite's size)")
    p.add_argument("--flows", nargs="+", choices=["html", "api"], default=["html", "api"],
                   help="BlindPair flows to run; html is the comparable one and decides the bar")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64, 256])
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per closed-loop level")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before each level's measured window")
    p.add_argument("--server-warmup", type=float, default=3.0,
                   help="seconds of untimed voting (4 evaluators) after each server starts, before the levels")
    p.add_argument("--rate", type=float, default=10.0,
                   help="open loop: votes started per second (default: below both tools' capacity here)")
    p.add_argument("--open-duration", type=float, default=10.0)
    p.add_argument("--pool", type=int, default=0, help="open loop: evaluators (default rate x 10)")
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--pairs-per-session", type=int, default=20)
    p.add_argument("--potato-threads", type=int, default=8)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


def tiny_args(argv: list[str] | None = None):
    return parser().parse_args(["--tiny", "--flows", "html", "--concurrency", "1", "4", "--duration", "1",
                                "--warmup", "0.3", "--server-warmup", "1", "--rate", "5", "--open-duration", "1",
                                "--pool", "4", "--prompts", "6", "--pairs-per-session", "3", *(argv or [])])


def main(argv: list[str] | None = None) -> Report | None:
    if argv and "--install" in argv:
        install_peer()
        return None
    return run_cli("bench.peer_potato", parser, run, argv, tiny_args)


if __name__ == "__main__":
    main(sys.argv[1:])
