"""``blindpair analyze``: a study's terminal summary and files, and ratings of a clean_battle log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.db import session_scope
from app.services.results_cache import get_results
from tests.app.services.results_factory import voted_study
from tests.factories import make_evaluator

runner = CliRunner()
ARENA = Path(__file__).resolve().parents[4] / "shared" / "data" / "arena_votes" / "clean_battle_20240220.json"


def run(*args):
    return runner.invoke(app, ["analyze", *args, "--width", "200"])


def test_study_summary_and_files(migrated, tmp_path):
    with session_scope() as s:
        study = voted_study(s, n_prompts=4, n_evaluators=3)
        make_evaluator(s, study, flagged=True, flag_reasons=["too fast"])
        study_id, slug = study.id, study.slug
    r = run("--study", str(study_id), "--html", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"))
    assert r.exit_code == 0, r.output
    with session_scope() as s:
        results = get_results(s, study_id=study_id).results
    assert results["headline"] in r.output
    assert "Video-text relevance" in r.output and "Overall preferred" in r.output
    assert "too fast" in r.output  # QC flags with their reasons
    first = results["criteria"][0]
    assert f"{100 * first['pref_rate_a']:.1f}%" in r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["results"] == results
    assert results["headline"] in (tmp_path / "r.html").read_text()
    by_slug = run("--study", slug)
    assert by_slug.exit_code == 0 and results["headline"] in by_slug.output
    assert "Add --include-flagged" not in by_slug.output  # the flagged evaluator cast no votes


def test_include_flagged_counts_flagged_votes(migrated):
    from app.models import Evaluator

    with session_scope() as s:
        study = voted_study(s, n_prompts=2, n_evaluators=2)
        s.query(Evaluator).filter_by(study_id=study.id).first().flagged = True
        study_id = study.id
    excluded = run("--study", str(study_id))
    included = run("--study", str(study_id), "--include-flagged")
    assert "2 votes from 1 evaluator on" in excluded.output and "Add --include-flagged" in excluded.output
    assert "4 votes from 2 evaluators" in included.output and "(2 votes, included above)" in included.output


def test_unknown_study_and_bad_arguments(migrated):
    r = run("--study", "nope")
    assert r.exit_code == 1 and "No study 'nope'" in r.output
    r = runner.invoke(app, ["analyze"])
    assert r.exit_code == 2 and "exactly one of --study" in r.output


def _battles(tmp_path: Path) -> Path:
    """Three models where strong > mid > weak clearly, with ties, in clean_battle format."""
    records = []
    plan = [("strong", "mid", 30, 10, 5), ("mid", "weak", 30, 10, 5), ("strong", "weak", 36, 4, 5)]
    t = 1_700_000_000.0
    for a, b, wins_a, wins_b, ties in plan:
        for winner, n in (("model_a", wins_a), ("model_b", wins_b), ("tie", ties)):
            for _ in range(n):
                t += 60
                records.append({"model_a": a, "model_b": b, "winner": winner, "judge": "u1", "anony": True,
                                "tstamp": t})
    records.append({"model_a": "mid", "model_b": "weak", "winner": "tie (bothbad)", "judge": "u2", "anony": False,
                    "tstamp": t + 1})
    path = tmp_path / "battles.json"
    path.write_text(json.dumps(records))
    return path


def test_battles_rates_a_clean_battle_log(tmp_path):
    out = tmp_path / "ratings.json"
    r = run("--battles", str(_battles(tmp_path)), "--n-boot", "200", "--json", str(out))
    assert r.exit_code == 0, r.output
    assert "136 battles between 3 models; 16 ties" in r.output
    lines = [ln for ln in r.output.splitlines() if any(m in ln for m in ("│ strong", "│ mid", "│ weak"))]
    assert [next(m for m in ("strong", "mid", "weak") if m in ln) for ln in lines[:3]] == ["strong", "mid", "weak"]
    doc = json.loads(out.read_text())
    (group,) = doc["groups"]
    ratings = {x["model"]: x for x in group["bradley_terry"]["ratings"]}
    assert abs(sum(x["rating"] for x in ratings.values()) / 3 - 1000) < 1e-6  # centred on 1000
    assert [ratings[m]["rank"] for m in ("strong", "mid", "weak")] == [1, 2, 3]
    assert group["davidson"]["nu"] > 0


def test_battles_refuses_a_bad_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"model_a": "x", "model_b": "y", "winner": "left"}]))
    r = run("--battles", str(bad))
    assert r.exit_code == 1 and "record 0" in r.output and "winner" in r.output


@pytest.mark.skipif(not ARENA.exists(), reason="the shared arena vote log is not available")
def test_battles_on_the_genai_arena_log(tmp_path):
    out = tmp_path / "arena.json"
    r = run("--battles", str(ARENA), "--n-boot", "100", "--json", str(out))
    assert r.exit_code == 0, r.output
    # SOURCE.md: 2,061 votes, one of a model against itself; 1,978 text-to-image votes over 6 models.
    assert "2,060 battles between 13 models" in r.output and "2 groups that never met" in r.output
    groups = json.loads(out.read_text())["groups"]
    t2i = groups[0]
    assert len(t2i["models"]) == 6 and all(m.endswith("_generation") for m in t2i["models"])
    assert t2i["bradley_terry"]["n_battles"] == 1977  # 1,978 minus the self-battle
