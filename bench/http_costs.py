"""What each piece of BlindPair's HTTP layer costs per request, in CPU microseconds (issue 16).

    python -m bench.http_costs             # about a minute
    python -m bench.http_costs --tiny      # seconds, what the test suite runs

bench/launch.py compares the whole vote path with a bare FastAPI app; this prices the pieces in between, each
timed in-process (no sockets, no load generator), so the report can say what each costs:

- **middleware**: one ASGI request through the app's own stack (``create_bare_app``: forwarded-address,
  security headers, input guards, the session cookie, FastAPI's own) against the same trivial ``def`` route
  on a bare FastAPI app; every middleware is pure ASGI, so the difference is their work, not buffering;
- **credential**: checking an evaluator token's signature (itsdangerous) and loading the evaluator's state
  (the one query a rating request starts with);
- **CSRF**: issuing the form token into the session and checking a submitted one;
- **rendering**: the pair page template with a real pair, and the API's JSON answer (pydantic).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Report, run_cli


def _cpu_us(fn: Callable[[], Any], n: int) -> float:
    for _ in range(max(1, n // 10)):
        fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


def _asgi_caller(app, path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None,
                 body: bytes = b"") -> Callable[[], int]:
    """One request through ``app`` per call, on one event loop; returns the status (checked by the caller)."""
    loop = asyncio.new_event_loop()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), *(headers or [])], "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8000)}
    # The lifespan runs once (the thread headroom is set there), as uvicorn does.
    status = [0]

    async def one() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]

        await app(dict(scope), receive, send)

    def call() -> int:
        loop.run_until_complete(one())
        return status[0]

    return call


def measure(n: int) -> dict[str, float]:
    from bench.vote_path import configure, seed_study

    tmp = Path(tempfile.mkdtemp(prefix="bp-http-costs-"))
    configure(f"sqlite:///{tmp / 'costs.sqlite'}", tmp / "data")
    _study_id, invite, _note = seed_study(n_prompts=4, pairs_per_session=4, attention_checks=False)

    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse
    from starlette.requests import Request

    from app.api.evaluate import PairResponse, _pair_out
    from app.csrf import csrf_token, verify_csrf
    from app.db import session_scope
    from app.deps import evaluator_token, public_id_from_token
    from app.main import create_bare_app
    from app.services.assignments import evaluator_state, join, next_assignment, study_criteria
    from app.web.evaluator import render_pair_page

    def trivial() -> PlainTextResponse:
        return PlainTextResponse("ok")

    bare = FastAPI(openapi_url=None)
    bare.get("/t")(trivial)
    stack = create_bare_app()
    stack.get("/t")(trivial)
    bare_call, stack_call = _asgi_caller(bare, "/t"), _asgi_caller(stack, "/t")
    if bare_call() != 200 or stack_call() != 200:
        raise RuntimeError("the trivial route did not answer 200")
    out = {"bare_fastapi_request_us": _cpu_us(bare_call, n), "app_stack_request_us": _cpu_us(stack_call, n)}
    out["middleware_us"] = out["app_stack_request_us"] - out["bare_fastapi_request_us"]

    with session_scope() as s:
        evaluator = join(s, invite_token=invite, ip="127.0.0.1", user_agent="bench")
        token = evaluator_token(evaluator)
        public_id = evaluator.public_id
    out["token_signature_us"] = _cpu_us(lambda: public_id_from_token(token), n)
    with session_scope() as s:
        out["evaluator_state_query_us"] = _cpu_us(lambda: evaluator_state(s, public_id=public_id), n)

    request = Request({"type": "http", "method": "POST", "path": "/e/vote", "headers": [], "session": {},
                       "query_string": b"", "app": stack, "router": stack.router})
    issued = csrf_token(request)
    out["csrf_issue_us"] = _cpu_us(lambda: csrf_token(request), n)
    out["csrf_verify_us"] = _cpu_us(lambda: verify_csrf(request, issued), n)

    with session_scope() as s:
        state = evaluator_state(s, public_id=public_id)
        if state is None:
            raise RuntimeError("the benchmark's evaluator vanished")
        view = next_assignment(s, evaluator_id=state.id, state=state)
        if view is None:
            raise RuntimeError("no pair to render")
        criteria = study_criteria(s, state.study_id)
        # The page as the route renders it (app/web/evaluator.py), response object included.
        def render() -> str:
            response = render_pair_page(request, view, criteria=criteria, quota=4, number=1)
            return bytes(response.body).decode()

        if view.token not in render():
            raise RuntimeError("the rendered page lacks its assignment")
        out["pair_page_render_us"] = _cpu_us(render, max(1, n // 4))
        answer = PairResponse(status="pair", done=0, total=4, pair=_pair_out(s, view, state))
        out["pair_json_us"] = _cpu_us(lambda: PairResponse.model_validate(answer.model_dump()).model_dump_json(), n)
    return out


LABELS = (
    ("bare_fastapi_request_us", "one request to a trivial `def` route, bare FastAPI"),
    ("app_stack_request_us", "the same route inside BlindPair's stack (create_bare_app)"),
    ("middleware_us", "so BlindPair's middleware costs (pure ASGI: forwarded address, security headers, "
                      "input guards, session cookie)"),
    ("token_signature_us", "credential: the evaluator token's signature (itsdangerous)"),
    ("evaluator_state_query_us", "credential: the evaluator's state, one query (SQLite)"),
    ("csrf_issue_us", "CSRF: issuing the form token"),
    ("csrf_verify_us", "CSRF: checking a submitted token"),
    ("pair_page_render_us", "rendering: the pair page (Jinja2, through the route's render_pair_page)"),
    ("pair_json_us", "rendering: the API's pair answer (pydantic validate + JSON, as FastAPI's response model)"),
)


def run(args) -> Report:
    report = Report("http_costs", "The HTTP layer piece by piece: CPU per request (issue 16)",
                    "python -m bench.http_costs", params={k: v for k, v in vars(args).items() if k != "func"})
    costs = measure(args.n)
    report.table(f"CPU µs per call, in-process ({args.n} calls each, after a warm-up)", ["piece", "µs"],
                 [[label, costs[key]] for key, label in LABELS])
    report.data = costs
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="seconds-long run (the test suite's size)")
    p.add_argument("--n", type=int, default=5000, help="timed calls per piece")
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


def tiny_args(argv: list[str] | None = None):
    return parser().parse_args(["--tiny", "--n", "50", *(argv or [])])


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.http_costs", parser, run, argv, tiny_args)


if __name__ == "__main__":
    main(sys.argv[1:])
