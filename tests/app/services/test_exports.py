"""Exports: one row per vote x criterion with model-space winners, lossless CSV/JSONL/Parquet, the clips
manifest, results JSON = compute_results, clean_battle logs, and a report that needs nothing from the network."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest
from bs4 import BeautifulSoup

from app.criteria import DEFAULT_CRITERIA
from app.models import Clip, Vote
from app.services import exports
from app.services.results_cache import get_results
from app.stats.clean_battle import read_clean_battle
from tests.app.services.results_factory import cast_vote, voted_study
from tests.factories import make_evaluator, make_pairs, make_study

KEYS = [c.key for c in DEFAULT_CRITERIA]


def _body(download: exports.Download) -> bytes:
    return download.body if isinstance(download.body, bytes) else b"".join(download.body)


@pytest.fixture
def study(session):
    return voted_study(session, n_prompts=4, n_evaluators=3)


def test_raw_votes_one_row_per_vote_and_criterion_with_model_space_winner(session):
    study = make_study(session, n_prompts=1)
    (pair,) = make_pairs(session, study)
    ev = make_evaluator(session, study)
    # clip_b's model (animatediff) on the left; "left" therefore means animatediff won.
    cast_vote(session, pair=pair, evaluator=ev, choices=dict.fromkeys(KEYS, "left") | {"overall_quality": "tie"},
              a_left=False)
    frame = pd.read_csv(io.BytesIO(_body(exports.raw_votes(session, study=study, fmt="csv"))))
    assert list(frame.columns) == list(exports.RAW_VOTE_COLUMNS)
    assert len(frame) == len(KEYS)
    assert (frame["left_model"] == "animatediff").all() and (frame["side"].iloc[:5] == "left").all()
    decided = frame[frame["criterion"] != "overall_quality"]
    assert (decided["winner"] == "model_b").all() and (decided["winner_model"] == "animatediff").all()
    tie = frame[frame["criterion"] == "overall_quality"].iloc[0]
    assert tie["winner"] == "tie" and tie["winner_model"] == "tie"
    assert frame["study"].iloc[0] == study.slug


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_raw_votes_round_trip_through_pandas(session, study, fmt):
    expected = exports.raw_votes_frame(session, study=study)
    n_votes = session.query(Vote).filter_by(study_id=study.id).count()
    assert len(expected) == n_votes * len(KEYS) == 4 * 3 * len(KEYS)
    assert not expected.duplicated(["vote_id", "criterion"]).any()
    download = exports.raw_votes(session, study=study, fmt=fmt)
    body = _body(download)
    assert download.filename.endswith(f".{fmt}") and study.slug in download.filename
    if fmt == "csv":
        got = pd.read_csv(io.BytesIO(body))
    elif fmt == "jsonl":
        got = pd.read_json(io.BytesIO(body), lines=True)
    else:
        got = pd.read_parquet(io.BytesIO(body))
    assert list(got.columns) == list(exports.RAW_VOTE_COLUMNS)
    got["submitted_at"] = pd.to_datetime(got["submitted_at"], utc=True).astype("datetime64[ns, UTC]")
    for col in ("vote_id", "study_id", "time_spent_ms"):
        got[col] = got[col].astype("int64")
    for col in ("evaluator", "prompt", "theme", "detail", "criterion", "model_a", "model_b", "left_model", "side",
                "winner", "winner_model", "study"):
        got[col] = got[col].astype(str)
        expected[col] = expected[col].astype(str)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_unknown_format_is_refused(session, study):
    with pytest.raises(exports.ExportError, match="csv, jsonl, parquet"):
        exports.raw_votes(session, study=study, fmt="xlsx")


def test_clips_manifest_has_settings_cost_and_object_keys_but_no_media_handles(session, study):
    clip = session.query(Clip).filter_by(study_id=study.id).first()
    clip.wall_seconds, clip.steps, clip.generation = 3.5, 4, {"scheduler": "EulerDiscrete"}
    session.flush()
    csv = pd.read_csv(io.BytesIO(_body(exports.clips_manifest(session, study=study, fmt="csv"))))
    assert len(csv) == session.query(Clip).filter_by(study_id=study.id).count()
    row = csv[csv["clip_id"] == clip.id].iloc[0]
    assert row["wall_seconds"] == 3.5 and row["steps"] == 4 and json.loads(row["generation"])["scheduler"]
    doc = json.loads(_body(exports.clips_manifest(session, study=study, fmt="json")))
    assert doc["settings"] == study.settings and len(doc["clips"]) == len(csv)
    text = _body(exports.clips_manifest(session, study=study, fmt="json")).decode()
    assert clip.media_token not in text
    # Where each object is, for `blindpair storage check` and a migration: its store, key and hash.
    record = next(c for c in doc["clips"] if c["clip_id"] == clip.id)
    assert (record["storage"], record["storage_key"], record["sha256"]) == ("local", clip.storage_name, clip.sha256)


def test_clips_manifest_carries_each_clips_lossy_level_and_psnr_copies_included(session, study):
    """Issue 21: the level the served file has and its PSNR against the master; an attention-check copy is made
    from its source's served file, so it carries that level (and a duplicate its PSNR too)."""
    source = session.query(Clip).filter_by(study_id=study.id, variant="").first()
    source.origin, source.lossy_level, source.psnr_db, source.fit_level = "generated", 30, 37.25, 10
    source.generation = {"negative_prompt": "blurry", "negative_prompt_used": False}
    copies = [Clip(study_id=study.id, model_id=source.model_id, prompt_id=source.prompt_id, seed=source.seed,
                   origin="degraded", source_clip_id=source.id, variant=v, status="done")
              for v in ("duplicate", "frozen")]
    session.add_all(copies)
    session.flush()
    csv = pd.read_csv(io.BytesIO(_body(exports.clips_manifest(session, study=study, fmt="csv"))))
    rows = {int(r["clip_id"]): r for _, r in csv.iterrows()}
    assert (rows[source.id]["lossy_level"], rows[source.id]["psnr_db"], rows[source.id]["fit_level"]) == (30, 37.25, 10)
    assert (rows[copies[0].id]["lossy_level"], rows[copies[0].id]["psnr_db"]) == (30, 37.25)
    assert rows[copies[1].id]["lossy_level"] == 30 and pd.isna(rows[copies[1].id]["psnr_db"])
    assert rows[source.id]["negative_prompt"] == "blurry" and not rows[source.id]["negative_prompt_used"]


def test_clips_manifest_writes_whole_numbers_as_whole_numbers(session, study):
    """A column with a missing value (steps of an imported clip) came out as 4.0 beside empty cells."""
    clip = session.query(Clip).filter_by(study_id=study.id).first()
    clip.steps = 4
    session.flush()
    import csv as csv_module

    body = _body(exports.clips_manifest(session, study=study, fmt="csv")).decode()
    rows = list(csv_module.DictReader(io.StringIO(body)))
    assert {row["steps"] for row in rows} <= {"4", ""} and "4" in {row["steps"] for row in rows}
    assert all("." not in row["clip_id"] for row in rows)
    doc = json.loads(_body(exports.clips_manifest(session, study=study, fmt="json")))
    assert {c["steps"] for c in doc["clips"]} <= {4, None}


def test_results_json_is_compute_results(session, study):
    doc = json.loads(_body(exports.results_json(session, study=study)))
    assert doc["results"] == get_results(session, study_id=study.id).results
    assert doc["votes"] == 12


def test_clean_battle_per_criterion_reads_back(session, study):
    raw = exports.raw_votes_frame(session, study=study)
    for key in ("motion_naturalness", "overall"):
        records = json.loads(_body(exports.clean_battle(session, study=study, criterion=key)))
        assert len(records) == 12
        assert {r["winner"] for r in records} <= {"model_a", "model_b", "tie"}
        assert all(r["anony"] is True and r["judge"].startswith("e") for r in records)
        back = read_clean_battle(records)
        assert len(back) == 12
        if key != "overall":
            mine = raw[raw["criterion"] == key].set_index("vote_id")["winner"]
            assert back.set_index("vote_id")["winner"].sort_index().tolist() == mine.sort_index().tolist()
    with pytest.raises(exports.ExportError, match="no criterion"):
        exports.clean_battle(session, study=study, criterion="bogus")


def test_html_report_is_self_contained_and_has_the_headline(session, study):
    html = _body(exports.html_report(session, study=study)).decode()
    soup = BeautifulSoup(html, "html.parser")
    headline = get_results(session, study_id=study.id).results["headline"]
    assert headline in soup.get_text()
    assert not soup.find("script") and not soup.find("link")
    for tag in soup.find_all(src=True) + soup.find_all(href=True):
        value = tag.get("src") or tag.get("href")
        assert not re.match(r"(https?:)?//", value), value
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html) and "@import" not in html
    assert len(soup.find_all("svg")) >= 5
    assert all(svg.get("role") == "img" and svg.find("title") for svg in soup.find_all("svg"))


def test_report_of_an_empty_study_is_friendly(session):
    study = make_study(session)
    html = _body(exports.html_report(session, study=study)).decode()
    assert "No votes yet." in html
