"""Load generator for the vote path, run as its own process: ``python -m bench.loadgen '<json config>'``.

Per vote it does what a client does: fetch the current pair, then post the six answers. Two flows:
``api`` (default): the evaluator JSON API, ``GET /api/v1/evaluate/pair`` then ``POST /api/v1/evaluate/votes``
with the ``X-Evaluator-Token`` header. ``html``: what a browser does, ``GET /e/pair``, read the hidden
assignment and CSRF tokens and the criteria from the HTML, post the form to ``POST /e/vote`` (303 back to
``/e/pair``, which is the next vote's fetch). Both join through the JSON API (joining is not measured; its
token is the same signed credential the browser keeps in the ``bp_eval`` cookie). An evaluator whose session
is done is replaced by a new one. The floor client posts one request per vote to bench/floor_app.py; the
``http`` and ``minimal`` kinds drive bench/http_floor_app.py (the app's HTTP layer, storing nothing or one row
per request) with either flow, like the app. The ``potato`` kind is the peer tool of bench/peer_potato.py, driven
the way its annotation page's JavaScript drives it (see ``potato_vote``).

Modes: ``closed`` (``concurrency`` evaluators, each voting again as soon as its last vote returned) and
``open`` (votes start at a fixed ``rate`` per second whatever the server does; latency is measured from the
scheduled start, so a slow server cannot hide queueing: no coordinated omission). Prints one JSON object.
Every loop is bounded by ``duration`` (plus a drain limit); only loopback URLs are accepted. Requests go
through bench/lean_http.py, a client lean enough not to compete with the server for the machine's cores.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import re
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.lean_http import LeanClient, LeanHTTPError, Response
from bench.proc_cpu import cpu_seconds, tree_cpu_seconds

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ASSIGNMENT_RE = re.compile(r'name="assignment" value="([^"]+)"')
CRITERION_RE = re.compile(r'name="c_([A-Za-z0-9_\-]+)"')
SIDES = ("left", "right", "tie")
# Potato (bench/peer_potato.py): the annotate page's hidden instance id and its pairwise multi_dimension inputs,
# ``name="<schema>:::<dimension>"``. Potato renders its pages through BeautifulSoup, which may reorder an input's
# attributes, so the id is found by element and the value read from it.
POTATO_INPUT_RE = re.compile(r"<input\b[^>]*>")
POTATO_ID_RE = re.compile(r'\bid="instance_id"')
POTATO_VALUE_RE = re.compile(r'\bvalue="([^"]*)"')
POTATO_DIMENSION_RE = re.compile(r'\bname="([^":]+):::([^"]+)"')
POTATO_DONE_RE = re.compile(r"<title>[^<]*- Complete\s*</title>")
POTATO_SIDES = ("A", "B", "tie")
DRAIN_SECONDS = 30.0


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # whole vote: page fetch + post (app) or the post (floor)
    page_latencies: list[float] = field(default_factory=list)
    post_latencies: list[float] = field(default_factory=list)
    join_latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    errors: Counter = field(default_factory=Counter)
    joins: int = 0
    # The server's CPU seconds and the votes accepted so far, at the measured window's start and end.
    cpu_marks: dict[str, tuple[float, int]] = field(default_factory=dict)


class Evaluator:
    def __init__(self, cookies: dict[str, str]) -> None:
        self.cookies = cookies
        self.pending: dict | None = None  # api1 flow: the next pair the last vote's answer carried

    def header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def remember(self, response: Response) -> None:
        for raw in response.headers.get_list("set-cookie"):
            name, _, rest = raw.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]


class VoteError(Exception):
    pass


async def join(client: LeanClient, invite: str, stats: Stats) -> Evaluator:
    r = await client.post("/api/v1/evaluate/join", json={"invite_token": invite})
    if r.status_code != 201:
        raise VoteError(f"join {r.status_code}: {r.text[:200]}")
    stats.joins += 1
    return Evaluator({"bp_eval": r.json()["evaluator_token"]})


async def app_vote(client: LeanClient, ev: Evaluator, stats: Stats, rng: random.Random) -> str:
    """One vote as a browser casts it. Returns 'voted' or 'finished' (the session's quota is done)."""
    t0 = time.perf_counter()
    page = await client.get("/e/pair", headers=ev.header())
    t1 = time.perf_counter()
    ev.remember(page)
    if page.status_code == 303 and page.headers.get("location", "").endswith("/e/done"):
        return "finished"
    if page.status_code != 200:
        raise VoteError(f"GET /e/pair {page.status_code}")
    html = page.text
    csrf, assignment = CSRF_RE.search(html), ASSIGNMENT_RE.search(html)
    if not csrf or not assignment:
        raise VoteError("pair page without csrf/assignment field")
    form = {"csrf_token": csrf.group(1), "assignment": assignment.group(1),
            "client_time_ms": str(rng.randint(5000, 30000))}
    for key in dict.fromkeys(CRITERION_RE.findall(html)):
        form[f"c_{key}"] = rng.choice(SIDES)
    t2 = time.perf_counter()
    post = await client.post("/e/vote", data=form, headers=ev.header())
    t3 = time.perf_counter()
    ev.remember(post)
    if post.status_code != 303 or not post.headers.get("location", "").endswith("/e/pair"):
        raise VoteError(f"POST /e/vote {post.status_code}")
    stats.page_latencies.append(t1 - t0)
    stats.post_latencies.append(t3 - t2)
    return "voted"


async def api_vote(client: LeanClient, ev: Evaluator, stats: Stats, rng: random.Random) -> str:
    """One vote through the evaluator JSON API: the current pair, then the answers (both sync routes)."""
    headers = {"X-Evaluator-Token": ev.cookies["bp_eval"]}
    t0 = time.perf_counter()
    page = await client.get("/api/v1/evaluate/pair", headers=headers)
    t1 = time.perf_counter()
    if page.status_code != 200:
        raise VoteError(f"GET /api/v1/evaluate/pair {page.status_code}")
    body = page.json()
    if body["status"] == "done":
        return "finished"
    pair = body["pair"]
    payload = {"assignment_token": pair["assignment_token"], "client_time_ms": rng.randint(5000, 30000),
               "choices": {c["key"]: rng.choice(SIDES) for c in pair["criteria"]}}
    t2 = time.perf_counter()
    post = await client.post("/api/v1/evaluate/votes", json=payload, headers=headers)
    t3 = time.perf_counter()
    if post.status_code != 200 or post.json().get("status") != "recorded":
        raise VoteError(f"POST /api/v1/evaluate/votes {post.status_code}")
    stats.page_latencies.append(t1 - t0)
    stats.post_latencies.append(t3 - t2)
    return "voted"


async def api1_vote(client: LeanClient, ev: Evaluator, stats: Stats, rng: random.Random) -> str:
    """One vote through the evaluator API in one request: ``POST /votes?next=true`` answers with the next pair.

    Only an evaluator's first pair needs ``GET /pair`` (counted as the page fetch, as in the api flow)."""
    headers = {"X-Evaluator-Token": ev.cookies["bp_eval"]}
    t0 = time.perf_counter()
    body = ev.pending
    if body is None:
        page = await client.get("/api/v1/evaluate/pair", headers=headers)
        if page.status_code != 200:
            raise VoteError(f"GET /api/v1/evaluate/pair {page.status_code}")
        body = page.json()
        stats.page_latencies.append(time.perf_counter() - t0)
    ev.pending = None
    if body["status"] == "done":
        return "finished"
    pair = body["pair"]
    payload = {"assignment_token": pair["assignment_token"], "client_time_ms": rng.randint(5000, 30000),
               "choices": {c["key"]: rng.choice(SIDES) for c in pair["criteria"]}}
    t2 = time.perf_counter()
    post = await client.post("/api/v1/evaluate/votes?next=true", json=payload, headers=headers)
    t3 = time.perf_counter()
    answer = post.json() if post.status_code == 200 else {}
    if answer.get("status") != "recorded":
        raise VoteError(f"POST /api/v1/evaluate/votes?next=true {post.status_code}")
    ev.pending = answer.get("next")
    stats.post_latencies.append(t3 - t2)
    return "voted"


def parse_potato_page(html: str) -> tuple[str | None, list[tuple[str, str]], bool]:
    """(instance id or None, the (schema, dimension) pairs to answer, whether this is the task's done page)."""
    instance_id = None
    dimensions: list[tuple[str, str]] = []
    for tag in POTATO_INPUT_RE.findall(html):
        if instance_id is None and POTATO_ID_RE.search(tag):
            value = POTATO_VALUE_RE.search(tag)
            instance_id = value.group(1) if value else None
        dim = POTATO_DIMENSION_RE.search(tag)
        if dim and dim.groups() not in dimensions:
            dimensions.append((dim.group(1), dim.group(2)))
    return instance_id, dimensions, bool(POTATO_DONE_RE.search(html))


async def potato_join(client: LeanClient, worker_prefix: str, n: int, stats: Stats) -> Evaluator:
    """Potato's crowd login (``login.type: url_direct``): the platform sends the worker to
    ``/?PROLIFIC_PID=<id>``, Potato registers them, sets its session cookie and redirects home."""
    # An explicit (empty) Cookie header: a client with a shared jar (httpx's) would send the session cookie of
    # whichever evaluator logged in last, and Potato would see that annotator already signed in.
    r = await client.get("/", params={"PROLIFIC_PID": f"{worker_prefix}{n}"}, headers={"Cookie": ""})
    if r.status_code != 302:
        raise VoteError(f"potato join {r.status_code}: {r.text[:200]}")
    ev = Evaluator({})
    ev.remember(r)
    if "session" not in ev.cookies:
        raise VoteError("potato join set no session cookie")
    stats.joins += 1
    return ev


async def potato_vote(client: LeanClient, ev: Evaluator, stats: Stats, rng: random.Random) -> str:
    """One item as Potato's annotation.js does it (potato-annotation 2.12.1): the annotate page (a full server
    render, ``loadNavigatedPage``), then on Next ``saveAnnotations`` (POST /updateinstance with every label as
    ``schema:label``) and ``navigateToNext`` (POST /annotate ``next_instance`` with ``X-Potato-Navigation``,
    which answers JSON, or a redirect home after the user's last item)."""
    t0 = time.perf_counter()
    page = await client.get("/annotate", headers=ev.header())
    t1 = time.perf_counter()
    ev.remember(page)
    if page.status_code != 200:
        raise VoteError(f"GET /annotate {page.status_code}")
    instance_id, dimensions, done = parse_potato_page(page.text)
    if instance_id is None:
        if done:
            return "finished"
        raise VoteError("potato page without instance_id")
    if not dimensions:
        raise VoteError("potato page without pairwise dimensions")
    save = {"instance_id": instance_id,
            "annotations": {f"{schema}:{dim}": rng.choice(POTATO_SIDES) for schema, dim in dimensions},
            "span_annotations": [], "client_timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "response_time_seconds": rng.randint(5000, 30000) / 1000}
    headers = {**ev.header(), "Content-Type": "application/json"}
    t2 = time.perf_counter()
    saved = await client.post("/updateinstance", content=json.dumps(save), headers=headers)
    ev.remember(saved)
    if saved.status_code != 200 or saved.json().get("status") != "success":
        raise VoteError(f"POST /updateinstance {saved.status_code}")
    nav = await client.post("/annotate", content=json.dumps({"action": "next_instance", "instance_id": instance_id}),
                            headers={**ev.header(), "Content-Type": "application/json", "X-Potato-Navigation": "1"})
    t3 = time.perf_counter()
    ev.remember(nav)
    if not (nav.status_code == 302 or (nav.status_code == 200 and nav.json().get("status") == "ok")):
        raise VoteError(f"POST /annotate next_instance {nav.status_code}")
    stats.page_latencies.append(t1 - t0)
    stats.post_latencies.append(t3 - t2)
    return "voted"


async def floor_vote(client: LeanClient, ev: Evaluator, stats: Stats, rng: random.Random) -> str:
    t0 = time.perf_counter()
    r = await client.post("/vote", headers={"x-evaluator": ev.cookies["id"]})
    if r.status_code != 200:
        raise VoteError(f"POST /vote {r.status_code}")
    stats.post_latencies.append(time.perf_counter() - t0)
    return "voted"


async def _new_evaluator(kind: str, client, invite, stats, n: int) -> Evaluator:
    if kind in FLOOR_KINDS:
        return Evaluator({"id": f"ev{n}"})
    if kind == "potato":  # Potato has no invite: the "invite" is this run's worker-id prefix
        return await potato_join(client, invite, n, stats)
    return await join(client, invite, stats)


async def _join_until(kind: str, client, invite, stats: Stats, n: int, until: float) -> Evaluator | None:
    """A new evaluator; a refused or timed-out join is counted as an error and tried again until ``until``."""
    while time.perf_counter() < until:
        try:
            return await _new_evaluator(kind, client, invite, stats, n)
        except (VoteError, LeanHTTPError) as exc:
            stats.errors[f"join: {str(exc)[:70] or type(exc).__name__}"] += 1
            await asyncio.sleep(0.1)
    return None


def own_client(cfg: dict) -> LeanClient:
    """One evaluator's own connection, as each participant's browser has its own.

    With one pool shared by hundreds of evaluators, httpx scanned the pool on every request: at 512 evaluators
    the load generator burnt a full core and the server sat 40% idle, so the "collapse" measured was the
    client's. One connection per evaluator keeps that cost constant (and ``LeanClient`` has no pool to scan).
    """
    return LeanClient(cfg["base_url"], timeout=30.0, max_connections=1)


@dataclass
class Window:
    """The measured window of a closed loop or a burst, and where errors start to count."""

    start: float
    end: float
    errors_from: float


def mark_server_cpu(cfg: dict, stats: Stats, name: str) -> None:
    """Note the server's CPU time (``server_pid``; with its children when ``server_tree``) and the votes accepted
    so far. The window's CPU per vote is then what serving those votes cost, without the evaluator pool's joins
    or the warm-up before it (charged to the votes when CPU was read around the whole run)."""
    pid = cfg.get("server_pid")
    if pid is None:
        return
    cpu = (tree_cpu_seconds if cfg.get("server_tree") else cpu_seconds)(int(pid))
    if cpu is not None:
        stats.cpu_marks[name] = (cpu, stats.accepted)


async def mark_window(cfg: dict, stats: Stats, window: Window) -> None:
    """Mark the server's CPU when the window opens and when it closes."""
    for name, at in (("start", window.start), ("end", window.end)):
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        mark_server_cpu(cfg, stats, name)


def window_cpu(stats: Stats) -> dict:
    """Server CPU seconds and votes accepted between the marks (empty when the server's CPU was not read)."""
    if "start" not in stats.cpu_marks or "end" not in stats.cpu_marks:
        return {}
    (cpu0, n0), (cpu1, n1) = stats.cpu_marks["start"], stats.cpu_marks["end"]
    return {"server_cpu_seconds": cpu1 - cpu0, "votes": n1 - n0}


async def _evaluator_votes(cfg: dict, i: int, delay: float, stats: Stats, window: Window, counter) -> None:
    """One evaluator on its own connection: after ``delay`` it joins, then votes as soon as each vote returns
    until the window ends, joining anew when its session is done. Latency and throughput count the votes that
    finish inside the window; the first join's latency is kept too."""
    kind, invite = cfg["kind"], cfg.get("invite", "")
    vote = VOTERS[(kind, cfg.get("flow", "api"))]
    await asyncio.sleep(delay)
    async with own_client(cfg) as client:
        rng = random.Random(i)
        t = time.perf_counter()
        ev = await _join_until(kind, client, invite, stats, next(counter), window.end)
        stats.join_latencies.append(time.perf_counter() - t)
        while ev is not None and time.perf_counter() < window.end:
            t0 = time.perf_counter()
            try:
                outcome = await vote(client, ev, stats, rng)
            except (VoteError, LeanHTTPError) as exc:
                if t0 >= window.errors_from:
                    stats.errors[str(exc)[:80] or type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            t1 = time.perf_counter()
            if outcome == "finished":
                ev = await _join_until(kind, client, invite, stats, next(counter), window.end)
                continue
            if window.start <= t1 <= window.end:
                stats.latencies.append(t1 - t0)
            stats.accepted += 1


async def closed_loop(cfg: dict, client: LeanClient, stats: Stats) -> float:
    """``concurrency`` evaluators from the start, each voting again as soon as its last vote returned; the window
    follows a warm-up, and errors count from the window on."""
    start = time.perf_counter() + cfg.get("warmup", 1.0)
    window = Window(start, start + cfg["duration"], errors_from=start)
    counter = iter(range(10**9))
    await asyncio.gather(mark_window(cfg, stats, window),
                         *(_evaluator_votes(cfg, i, 0.0, stats, window, counter) for i in range(cfg["concurrency"])))
    return cfg["duration"]


async def burst(cfg: dict, client: LeanClient, stats: Stats) -> float:
    """A launch: ``concurrency`` evaluators arrive spread evenly over ``join_seconds`` (a crowd platform sending a
    study's participants at once), each joins, then votes as fast as the server answers until the end.

    Throughput and latencies count what finishes in the window after the last arrival (``duration`` seconds), so
    the joins' backlog is inside it; join latencies and errors are all kept."""
    n, spread = cfg["concurrency"], float(cfg.get("join_seconds", 3.0))
    now = time.perf_counter()
    window = Window(now + spread, now + spread + cfg["duration"], errors_from=now)
    counter = iter(range(10**9))
    await asyncio.gather(mark_window(cfg, stats, window),
                         *(_evaluator_votes(cfg, i, spread * i / n, stats, window, counter) for i in range(n)))
    return cfg["duration"]


async def open_loop(cfg: dict, client: LeanClient, stats: Stats) -> float:
    kind, invite, rate, duration = cfg["kind"], cfg.get("invite", ""), cfg["rate"], cfg["duration"]
    vote = VOTERS[(kind, cfg.get("flow", "api"))]
    # The evaluator population: each evaluator votes about every pool/rate seconds (2,000 at 200/s: every 10 s).
    pool: asyncio.Queue[Evaluator] = asyncio.Queue()
    n_pool = int(cfg.get("pool", rate * 10))
    counter = iter(range(10**9))
    sem = asyncio.Semaphore(32)

    async def add_one() -> None:
        async with sem:
            ev = await _join_until(kind, client, invite, stats, next(counter), time.perf_counter() + 60)
            if ev is not None and cfg.get("flow") == "api1" and kind == "app":
                # The population is already rating when the measured loop starts, as in a study's steady state:
                # each evaluator has its current pair (in the one-request flow its first GET came on arrival).
                # Without this, 2,000 first-pair fetches landed in the loop's first ten seconds on top of the rate.
                page = await client.get("/api/v1/evaluate/pair", headers={"X-Evaluator-Token": ev.cookies["bp_eval"]})
                if page.status_code == 200:
                    ev.pending = page.json()
            if ev is not None:
                pool.put_nowait(ev)

    await asyncio.gather(*(add_one() for _ in range(n_pool)))
    rng = random.Random(0)
    tasks = []
    # At most this many votes in flight: beyond it, arrivals wait here (their latency still counts from the
    # scheduled time). Thousands of requests queued inside an HTTP client's connection pool cost the generator
    # quadratic CPU and starved the server it was measuring.
    in_flight = asyncio.Semaphore(int(cfg.get("max_in_flight", 256)))

    async def one(scheduled: float) -> None:
        async with in_flight:
            await vote_once(scheduled)

    async def vote_once(scheduled: float) -> None:
        try:
            ev = pool.get_nowait() if not pool.empty() else await _new_evaluator(kind, client, invite, stats,
                                                                                  next(counter))
            outcome = await vote(client, ev, stats, rng)
            if outcome == "finished":
                ev = await _new_evaluator(kind, client, invite, stats, next(counter))
                outcome = await vote(client, ev, stats, rng)
        except (VoteError, LeanHTTPError) as exc:
            stats.errors[str(exc)[:80] or type(exc).__name__] += 1
            return
        stats.latencies.append(time.perf_counter() - scheduled)
        stats.accepted += 1
        pool.put_nowait(ev)

    start = time.perf_counter() + 0.2
    n = int(rate * duration)
    # The window: from the first scheduled vote until the last is answered (the pool's joins are before it;
    # evaluators who join because their session was done are inside it, as in a study's steady state).
    mark_server_cpu(cfg, stats, "start")
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    _done, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS) if tasks else (set(), set())
    mark_server_cpu(cfg, stats, "end")
    for t in pending:
        t.cancel()
        stats.errors["not answered within the drain limit"] += 1
    return duration


# "http" and "minimal" are bench/http_floor_app.py (the app's HTTP layer without a database, or storing one row
# per request), driven like the app.
# "floor" is bench/floor_app.py (bare Starlette), "fastapi" bench/fastapi_floor_app.py: one request per vote.
FLOOR_KINDS = ("floor", "fastapi")
VOTERS = {**{(kind, flow): floor_vote for kind in FLOOR_KINDS for flow in ("api", "api1", "html")},
          ("app", "api1"): api1_vote, ("potato", "html"): potato_vote,
          **{(kind, flow): voter for kind in ("app", "http", "minimal")
             for flow, voter in (("api", api_vote), ("html", app_vote))}}


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(f"the load generator only targets loopback servers, not {host!r}")


async def main_async(cfg: dict) -> dict:
    _check_loopback(cfg["base_url"])
    stats = Stats()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    # The open loop's shared client: as many connections as votes it lets be in flight.
    async with LeanClient(cfg["base_url"], timeout=30.0,
                          max_connections=max(int(cfg.get("max_in_flight", 256)), cfg.get("concurrency", 0))) as client:
        run = {"closed": closed_loop, "open": open_loop, "burst": burst}[cfg["mode"]]
        seconds = await run(cfg, client, stats)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "latencies": stats.latencies, "page_latencies": stats.page_latencies,
        "post_latencies": stats.post_latencies, "join_latencies": stats.join_latencies,
        "accepted": stats.accepted, "errors": dict(stats.errors),
        "joins": stats.joins, "seconds": seconds, "window_cpu": window_cpu(stats),
        "loadgen_cpu_seconds": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    # No cyclic garbage collection while measuring: with 2,000 evaluators' clients this process holds ~180,000
    # objects, and each oldest-generation collection paused it 80-100 ms, every few seconds. Answers that arrived
    # during a pause were timed late, and those pauses were most of the open loop's p99 (the server's own, with
    # its heap frozen by app/gc_pauses.py, were rare). A run lasts minutes; the memory it keeps is small.
    gc.disable()
    try:
        import uvloop
    except ImportError:  # plain asyncio works, it is just a little slower
        result = asyncio.run(main_async(cfg))
    else:
        result = uvloop.run(main_async(cfg))
    # To a file when asked: uvloop leaves stdout non-blocking, and a result over the pipe's 64 KiB (every
    # latency of a long open loop) was cut off mid-line.
    if cfg.get("result_path"):
        with open(cfg["result_path"], "w") as f:
            json.dump(result, f)
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
