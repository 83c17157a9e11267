"""Each benchmark runs end to end at its tiny size and its report is internally consistent.

No timing is asserted anywhere (timings belong in BENCHMARKS.md, not in pass/fail); what is checked is that
the benchmark measured what it says: votes stored equal votes accepted, results cover every vote, encoders
round-trip every frame, the worker path produced its clips, and the tables are written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.support.servers import postgres_unavailable_reason

IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(autouse=True)
def _restore(restore_environment):
    """Every test here: see tests/bench/conftest.py."""


def _saved(results: Path, name: str) -> dict:
    assert (results / f"{name}.md").read_text().startswith("## ")
    return json.loads((results / f"{name}.json").read_text())


def _check_vote_path(tmp_path: Path, backend: str, flow: str = "api") -> None:
    from bench import vote_path

    report = vote_path.main(["--tiny", "--backends", backend, "--flow", flow, "--results-dir", str(tmp_path)])
    data = _saved(tmp_path, "vote_path")["data"][backend]
    assert set(data["closed"]) == {f"{kind}-{c}" for kind in ("app", "floor", "minimal", "http") for c in (1, 4)}
    for key, run in [*data["closed"].items(), *data["open"].items()]:
        assert run["accepted"] > 0
        assert run["server_cpu_ms_per_vote"] > 0
        if key.startswith("http"):
            assert run["stored"] is None  # the HTTP-layer floor has no database to count in
            continue
        # Every vote the server accepted is in the database, none twice. (Refusals are counted, not asserted:
        # they are findings of the benchmark, reported in its table, not failures of the benchmark.)
        assert run["stored"] == run["accepted"]
    assert ("stored votes == accepted votes in every run (plus at most the abandoned in-flight ones)", True,
            "agree") in report.bars
    inproc = data["in_process"]  # the services without HTTP: votes were cast and their statements counted
    assert inproc["votes"] == 10 and inproc["statements_per_vote"] > 5 and inproc["dbapi_us"] > 0


def test_vote_path_runs_on_sqlite(tmp_path):
    _check_vote_path(tmp_path, "sqlite")


def test_vote_path_runs_the_browser_flow(tmp_path):
    _check_vote_path(tmp_path, "sqlite", flow="html")


@pytest.mark.postgres
@pytest.mark.slow
def test_vote_path_runs_on_postgres(tmp_path):
    reason = postgres_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
        pytest.skip(reason)
    _check_vote_path(tmp_path, "postgres")


def test_http_layer_floor_checks_the_token_and_the_answers_as_the_app_does():
    # Its rate bounds the app's only if it does the app's HTTP-side work: a forged credential or an answer
    # missing a criterion is refused, a whole answer from a joined evaluator is accepted.
    from fastapi.testclient import TestClient

    from bench.http_floor_app import KEYS, create_app

    with TestClient(create_app()) as client:
        token = client.post("/api/v1/evaluate/join", json={"invite_token": "any"}).json()["evaluator_token"]
        assert client.get("/api/v1/evaluate/pair", headers={"X-Evaluator-Token": token + "x"}).status_code == 401
        pair = client.get("/api/v1/evaluate/pair", headers={"X-Evaluator-Token": token}).json()["pair"]
        assert {c["key"] for c in pair["criteria"]} == KEYS
        body = {"assignment_token": pair["assignment_token"], "choices": dict.fromkeys(KEYS, "left")}
        headers = {"X-Evaluator-Token": token}
        assert client.post("/api/v1/evaluate/votes", json=body, headers=headers).json()["status"] == "recorded"
        partial = {**body, "choices": dict.fromkeys(sorted(KEYS)[:5], "tie")}
        assert client.post("/api/v1/evaluate/votes", json=partial, headers=headers).status_code == 422
        bad_side = {**body, "choices": dict.fromkeys(KEYS, "up")}
        assert client.post("/api/v1/evaluate/votes", json=bad_side, headers=headers).status_code == 422


def test_http_layer_floor_serves_the_browser_flow_with_csrf_and_every_answer():
    from fastapi.testclient import TestClient

    from bench.http_floor_app import KEYS, create_app
    from bench.loadgen import ASSIGNMENT_RE, CRITERION_RE, CSRF_RE

    with TestClient(create_app(), follow_redirects=False) as client:
        assert client.get("/e/pair").status_code == 401  # no evaluator cookie
        token = client.post("/api/v1/evaluate/join", json={"invite_token": "any"}).json()["evaluator_token"]
        client.cookies.set("bp_eval", token)
        page = client.get("/e/pair")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert set(CRITERION_RE.findall(page.text)) == KEYS  # the real template, with the six criteria
        form = {"csrf_token": CSRF_RE.search(page.text).group(1),
                "assignment": ASSIGNMENT_RE.search(page.text).group(1),
                **{f"c_{k}": "right" for k in KEYS}}
        answered = client.post("/e/vote", data=form)
        assert answered.status_code == 303 and answered.headers["location"] == "/e/pair"
        assert client.post("/e/vote", data={**form, "csrf_token": "forged"}).status_code == 403
        partial = {k: v for k, v in form.items() if k != "c_overall_quality"}
        assert client.post("/e/vote", data=partial).status_code == 422


def test_profile_summary_attributes_samples_to_layers_and_app_functions(tmp_path):
    from bench.vote_path import summarise_profile

    raw = tmp_path / "raw.txt"
    raw.write_text(
        "Thread._bootstrap (threading.py:1002);api_vote (app/api/evaluate.py:161);submit_vote (votes.py:103);"
        "Session.execute (sqlalchemy/orm/session.py:2300);"
        "DefaultDialect.do_execute (sqlalchemy/engine/default.py:1192) 3\n"
        "Thread._bootstrap (threading.py:1002);api_pair (app/api/evaluate.py:142);"
        "Environment.render (jinja2/environment.py:1300) 1\n"
        "Thread._bootstrap (threading.py:1002);WorkerThread.run (anyio/_backends/_asyncio.py:1124);"
        "Condition.wait (threading.py:320) 6\n")
    out = summarise_profile(raw)
    assert out["busy_samples"] == 4 and out["idle_samples"] == 6
    layers = dict(out["layers"])
    assert layers["database: SQL running in SQLite / libpq (driver execute, commit)"] == 0.75
    assert layers["Jinja2 template rendering"] == 0.25
    functions = dict(out["app_functions"])
    assert functions["submit_vote (votes.py)"] == 0.75 and functions["api_pair (api/evaluate.py)"] == 0.25


def test_analysis_runs_and_covers_every_vote(tmp_path):
    from bench import analysis

    analysis.main(["--tiny", "--results-dir", str(tmp_path)])
    sizes = _saved(tmp_path, "analysis")["data"]["sizes"]
    assert [s["votes"] for s in sizes] == [500, 2000]
    for s in sizes:
        assert s["rows"] == s["votes"] * 6
        assert s["n_votes_in_results"] == s["votes"]
        # The floor reads the same rows the product's vote frame is built from.
        assert s["floor_rows"] == s["vote_frame_rows"] == s["rows"]
        assert s["recomputed_on_page_view"] is False
        assert all(e["bytes"] > 0 for e in s["exports"].values())


def test_gif_encoding_runs_and_every_method_round_trips(tmp_path):
    from bench import gif_encoding

    gif_encoding.main(["--tiny", "--results-dir", str(tmp_path)])
    data = _saved(tmp_path, "gif_encoding")["data"]
    for by_method in data["encoding"].values():
        for records in by_method.values():
            assert all(r["frames_ok"] == 1.0 and r["bytes"] > 0 for r in records)
    assert data["serving"]["app"]["status_if_none_match"] == 304
    assert data["serving"]["app"]["etag"] is True


@pytest.mark.slow
def test_generation_runs_through_the_worker_path(tmp_path):
    from bench import generation

    generation.main(["--tiny", "--results-dir", str(tmp_path)])
    data = _saved(tmp_path, "generation")["data"]
    assert data["in_process"]["outcomes"] == ["done"] * 4  # 2 prompts x 2 tiny presets
    for preset in generation.PRESETS:
        assert len(data["floor"][preset]) == 2


@pytest.mark.slow
def test_gpu_generation_self_test_runs_on_cpu(tmp_path):
    from bench import gpu_generation

    gifs = tmp_path / "real"
    gifs.mkdir()
    frames = [Image.new("RGB", (48, 48), (40 * i, 90, 200 - 40 * i)) for i in range(3)]
    frames[0].save(gifs / "clip.gif", save_all=True, append_images=frames[1:], duration=125, loop=0)

    gpu_generation.main(["--tiny", "--real-gifs", str(gifs), "--results-dir", str(tmp_path)])
    data = _saved(tmp_path, "gpu_generation")["data"]
    assert data["unet_flops_per_eval"] > 0
    assert data["gpu_check"]["presets"]["lightning"]["unet_evals"] == 1
    assert data["variants"][0]["variant"] == "baseline" and data["variants"][0]["total"] > 0
    # The real clip went through the worker's encoder, and each worker-process count made its clips.
    assert [r["clip"] for r in data["encode_real"]] == ["clip.gif"] and data["encode_real"][0]["bytes"] > 0
    assert [(c["processes"], c["threads"], c["clips"]) for c in data["concurrency"]] == [
        (1, 1, 2), (1, 2, 4), (1, 3, 6), (2, 1, 4)]


def test_stored_and_accepted_votes_must_agree_up_to_abandoned_requests():
    from bench.vote_path import counts_agree

    assert counts_agree({"stored": 10, "accepted": 10, "errors": {}})
    assert not counts_agree({"stored": 9, "accepted": 10, "errors": {}})  # a lost vote is never excused
    assert not counts_agree({"stored": 11, "accepted": 10, "errors": {}})  # nor a duplicate
    assert counts_agree({"stored": 12, "accepted": 10, "errors": {"not answered within the drain limit": 5}})
    assert not counts_agree({"stored": 16, "accepted": 10, "errors": {"not answered within the drain limit": 5}})
    # The lean client's words for a request that may have reached the server before the client gave up on it.
    timed_out = "POST /api/v1/evaluate/votes?next=true: no answer within 30 s"
    assert counts_agree({"stored": 11, "accepted": 10, "errors": {timed_out: 1}})


def test_votes_are_counted_once_the_server_stops_storing_them(monkeypatch):
    """A saturated run leaves requests queued in the server after its client gave up: they are counted with
    that run, not with the next one (where they showed as votes stored beyond those accepted, with no errors)."""
    from bench import vote_path

    rows = iter([100, 130, 160, 160, 160, 160, 160, 160, 160, 160, 160, 160, 160, 160])
    monkeypatch.setattr(vote_path, "count_rows", lambda _table: next(rows))
    monkeypatch.setattr(vote_path.time, "sleep", lambda _s: None)
    clock = iter(float(i) for i in range(100))
    monkeypatch.setattr(vote_path.time, "monotonic", lambda: next(clock))
    assert vote_path._settled_count("votes", quiet_s=2.0) == 160


def test_gpu_generation_refuses_an_unknown_section(capsys):
    from bench import gpu_generation

    with pytest.raises(SystemExit):
        gpu_generation.parser().parse_args(["--sections", "presets,warp-drive"])
    assert "warp-drive: choose from presets,encode,concurrency,variants" in capsys.readouterr().err
    assert gpu_generation.parser().parse_args(["--sections", "concurrency"]).sections == ("concurrency",)


def test_rejudging_times_each_size_and_both_estimates_agree(tmp_path):
    # The benchmark stops if the columnar estimate and the answer-by-answer one differ; each size must have been
    # rated to its number of votes (six criteria each, fewer where a check says nothing about a criterion).
    from bench import rejudging

    rejudging.main(["--tiny", "--results-dir", str(tmp_path)])
    data = _saved(tmp_path, "rejudging")["data"]
    assert set(data) == {"60", "150"}
    for votes, m in data.items():
        assert int(votes) * 2 <= m["answers"] <= int(votes) * 6 and m["raters"] >= int(votes) // 10
        assert m["reliability_s"] > 0 and m["reference_estimate_s"] > 0 and m["read_s"] > 0
        assert m["reliability_first_s"] > 0 and m["rows_written"] >= 0


def test_run_all_gathers_a_speed_benchmark_only_when_asked(tmp_path):
    """The speed benchmarks of issue 16 are long and need PostgreSQL and the peer's venv: ``--speed`` (or naming
    one) adds them; the default run leaves them out."""
    from bench import run_all

    assert not set(run_all.SPEED) & set(run_all.selected(list(run_all.BENCHMARKS), speed=False))
    assert run_all.selected(["analysis", "rejudging"], speed=True) == ["analysis", "rejudging", "launch",
                                                                        "http_costs", "peer_potato"]
    assert run_all.main(["--tiny", "--only", "rejudging", "--results-dir", str(tmp_path)]) == 0
    gathered = (tmp_path / "ALL.md").read_text()
    assert "Machine:" in gathered and "re-judging" in gathered.lower() and "_rejudging took" in gathered
