"""The peer comparison (bench/peer_potato.py, issue 16 bar 4): its parsing helpers, and a tiny end-to-end run
against a real Potato when the peer's own venv is installed (it needs PyPI once, so it may be absent: then the
end-to-end test skips and says how to install it). No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loadgen import parse_potato_page
from bench.peer_potato import count_potato_stored, counts_agree, peer_unavailable_reason
from bench.proc_cpu import tree_cpu_seconds

# Lines as Potato 2.12.1 renders them (from a served /annotate page and its done page).
ANNOTATE_PAGE = """<html><head><title>BlindPair peer benchmark</title></head><body>
<input id="instance_id" name="instance_id" type="hidden" value="p007"/>
<input class="pairwise-value annotation-input pairwise-dim-input" data-dimension="text_relevance"
 label_name="text_relevance" name="criteria:::text_relevance" schema="criteria" type="hidden" validation="" value=""/>
<input class="pairwise-value annotation-input pairwise-dim-input" data-dimension="motion_amplitude"
 label_name="motion_amplitude" name="criteria:::motion_amplitude" schema="criteria" type="hidden" value=""/>
<input name="criteria:::motion_amplitude" type="hidden" value=""/>
</body></html>"""
DONE_PAGE = """<html><head>
    <title>BlindPair peer benchmark - Complete</title></head><body>You have completed the annotation task</body>"""


def test_the_annotate_page_gives_the_item_and_every_dimension_once():
    instance_id, dims, done = parse_potato_page(ANNOTATE_PAGE)
    assert instance_id == "p007"
    assert dims == [("criteria", "text_relevance"), ("criteria", "motion_amplitude")]
    assert not done


def test_the_id_is_found_whatever_the_attribute_order():
    page = '<input value="p042" type="hidden" name="instance_id" id="instance_id">'
    assert parse_potato_page(page)[0] == "p042"


def test_the_done_page_is_recognised_and_an_unknown_page_is_not():
    assert parse_potato_page(DONE_PAGE) == (None, [], True)
    assert parse_potato_page("<html><title>Login</title></html>") == (None, [], False)


def _state(tmp: Path, user: str, items: dict[str, list]) -> None:
    (tmp / user).mkdir(parents=True)
    (tmp / user / "user_state.json").write_text(json.dumps({"user_id": user, "instance_id_to_label_to_value": items}))


def _labels(answers: dict[str, str], schema: str = "criteria") -> list:
    return [[{"schema": schema, "name": k}, v] for k, v in answers.items()]


def test_stored_counts_only_items_with_every_dimension_answered(tmp_path):
    dims = ["a", "b"]
    _state(tmp_path, "u1", {"p1": _labels({"a": "A", "b": "tie"}),  # counts
                            "p2": _labels({"a": "B"}),  # one answer missing
                            "p3": _labels({"a": "A", "b": "maybe"})})  # not an answer Potato's pairwise gives
    _state(tmp_path, "u2", {"p1": _labels({"a": "B", "b": "B"}),  # counts: another annotator, same item
                            "p4": _labels({"a": "A", "b": "A"}, schema="other")})  # another schema
    (tmp_path / "exports").mkdir()  # Potato's own export folder has no user_state.json
    assert count_potato_stored(tmp_path, dims) == 2


def test_a_file_that_stays_unreadable_is_an_error_not_a_zero(tmp_path):
    (tmp_path / "u1").mkdir()
    (tmp_path / "u1" / "user_state.json").write_text('{"instance_id_to_label')
    with pytest.raises(json.JSONDecodeError):
        count_potato_stored(tmp_path, ["a"], attempts=1)


def test_stored_may_exceed_accepted_only_by_the_requests_cut_off():
    run = {"accepted": 10, "stored": 11, "errors": {"ReadError": 1}}
    assert counts_agree(run)
    assert not counts_agree({**run, "stored": 12})  # more extra votes than broken requests
    assert not counts_agree({**run, "stored": 9})  # an accepted vote missing is never excused
    assert not counts_agree({**run, "errors": {"POST /e/vote 409": 1}})  # a refusal was answered: nothing to excuse


def test_server_cpu_includes_the_children(tmp_path):
    # gunicorn's worker is a child of the master: CPU read from the master alone would be about zero.
    burn = "\n".join(["import sys, time", "t = time.process_time()", "while time.process_time() - t < 0.3: pass",
                      "print('done', flush=True)", "sys.stdin.read()"])
    parent = subprocess.Popen(["sh", "-c", f"{sys.executable} -c \"{burn}\""], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "done"
        from bench.proc_cpu import cpu_seconds

        assert cpu_seconds(parent.pid) < 0.2
        assert tree_cpu_seconds(parent.pid) >= 0.25
    finally:
        parent.stdin.close()
        parent.wait(timeout=10)




def test_tiny_peer_comparison_stores_every_accepted_vote(tmp_path, restore_environment):
    reason = peer_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from bench import peer_potato

    report = peer_potato.main(["--tiny", "--results-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "peer_potato.json").read_text())
    assert (tmp_path / "peer_potato.md").read_text().startswith("## Against a peer: Potato")
    for tool in ("potato", "blindpair-html"):
        runs = saved["data"][tool]
        assert set(runs) == {"warmup", "closed-1", "closed-4", "open"}
        for level, run in runs.items():
            assert run["accepted"] > 0, (tool, level)
            assert run["stored"] == run["accepted"], (tool, level)  # read back from Potato's files / our database
            if level != "warmup":  # the server's warm-up has no measured window (its votes may all come late)
                assert run["server_cpu_ms_per_vote"] > 0
            assert not [e for e in run["errors"] if e.startswith("join")], run["errors"]
    assert ("stored == accepted in every run, both tools (plus at most the abandoned in-flight ones)", True,
            "agree") in report.bars


def test_a_missing_peer_venv_is_a_reason_that_says_how_to_install(tmp_path):
    reason = peer_unavailable_reason(tmp_path / "no-venv")
    assert reason is not None and "python -m bench.peer_potato --install" in reason
