"""The evaluator's pages over HTTP: join, consent, pairs, missing answers, double submits, resume, media."""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select, update

from app.db import get_sessionmaker
from app.main import create_app
from app.models import Assignment, Clip, Evaluator, Vote
from app.web.media import strip_gif_metadata
from tests.factories import gif_bytes, make_pairs, make_study


@pytest.fixture
def study(session):
    study = make_study(session, n_prompts=4, pairs_per_session=3, redirect_url="https://panel.example/done?x=1")
    make_pairs(session, study)
    assert len(study.criteria) == 6  # loaded now: no lazy load (and SQLite write lock) during requests
    session.commit()
    return study


def db(stmt):
    """Read in a short session of its own: SQLite's BEGIN IMMEDIATE would otherwise block the app's requests."""
    with get_sessionmaker()() as s:
        return s.scalar(stmt)


def _soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def _hidden(response, name: str) -> str:
    return _soup(response).find("input", attrs={"name": name})["value"]


def join_and_consent(client, study, query: str = "") -> None:
    page = client.get(f"/join/{study.invite_token}{query}")
    assert page.status_code == 200
    r = client.post(f"/join/{study.invite_token}", data={
        "csrf_token": _hidden(page, "csrf_token"), "consent": "yes", "external_id": _hidden(page, "external_id"),
    }, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/e/pair"


def answer(client, page, choices: dict[str, str]):
    data = {"csrf_token": _hidden(page, "csrf_token"), "assignment": _hidden(page, "assignment"),
            **{f"c_{k}": v for k, v in choices.items()}}
    return client.post("/e/vote", data=data, follow_redirects=False)


def test_instructions_list_criteria_and_need_consent(client, study, session):
    page = client.get(f"/join/{study.invite_token}?PROLIFIC_PID=abc123")
    soup = _soup(page)
    for c in study.criteria:
        assert c.label in page.text and c.description in page.text
    assert soup.find("input", attrs={"name": "consent", "type": "checkbox"}) is not None
    no_consent = client.post(f"/join/{study.invite_token}", data={"csrf_token": _hidden(page, "csrf_token")})
    assert no_consent.status_code == 422 and "tick the consent box" in no_consent.text
    forged = client.post(f"/join/{study.invite_token}", data={"csrf_token": "x", "consent": "yes"})
    assert forged.status_code == 403
    assert db(select(func.count(Evaluator.id))) == 0
    join_and_consent(client, study, "?PROLIFIC_PID=abc123")
    ev = db(select(Evaluator))
    assert ev.external_id == "abc123" and ev.consented_at is not None
    # Opening the invite link again resumes instead of starting a second session.
    assert client.get(f"/join/{study.invite_token}", follow_redirects=False).headers["location"] == "/e/pair"


def test_an_overlong_platform_id_in_the_invite_link_still_lets_the_evaluator_join(client, study):
    # The consent form echoes the id from the link; over the form's 200-character limit it answered with
    # FastAPI's raw JSON 422 and the participant could not join at all.
    join_and_consent(client, study, "?PROLIFIC_PID=" + "p" * 300)
    assert db(select(Evaluator)).external_id == "p" * 200


def test_invalid_and_closed_invites_say_so(client, study, session):
    assert client.get("/join/not-a-token").status_code == 404
    study.status = "closed"
    session.commit()
    r = client.get(f"/join/{study.invite_token}")
    assert r.status_code == 409 and "not accepting answers" in r.text


def test_pair_page_shows_prompt_two_gifs_and_six_rows(client, study):
    join_and_consent(client, study)
    page = client.get("/e/pair")
    soup = _soup(page)
    assert page.status_code == 200 and "Pair 1 of 3" in page.text
    imgs = soup.select("img.clip")
    assert len(imgs) == 2 and all(i["src"].startswith("/m/") for i in imgs)
    assert imgs[0]["width"] == imgs[1]["width"] and imgs[0]["height"] == imgs[1]["height"]
    assert soup.find(id="replay") is not None
    fieldsets = soup.select("fieldset.criterion")
    assert len(fieldsets) == 6
    for fs in fieldsets:
        radios = fs.select("input[type=radio]")
        assert [r["value"] for r in radios] == ["left", "right", "tie"]
        assert fs.legend.text.strip()
        assert all(r.find_parent("label") is not None for r in radios)  # clickable, named choices
    assert not soup.find_all("script", src=False), "inline scripts would need a loosened CSP"
    assert soup.find("script", src=True)["src"].split("?v=")[0].endswith("/static/js/pair.js")


def test_missing_criteria_are_named_and_choices_kept(client, study, session):
    join_and_consent(client, study)
    page = client.get("/e/pair")
    keys = [c.key for c in study.criteria]
    r = answer(client, page, {keys[0]: "left", keys[2]: "tie", keys[3]: "right"})
    assert r.status_code == 422
    soup = _soup(r)
    alert = soup.find(id="vote-error").text
    assert "Appearance distortion" in alert and "Motion amplitude" in alert and "Overall quality" in alert
    assert "Video-text relevance" not in alert
    assert soup.find(id=f"c_{keys[0]}_left").has_attr("checked")
    assert soup.find(id=f"c_{keys[2]}_tie").has_attr("checked")
    assert soup.find(id=f"c_{keys[3]}_right").has_attr("checked")
    assert soup.find(id=f"q-{keys[1]}")["aria-invalid"] == "true"
    assert _hidden(r, "assignment") == _hidden(page, "assignment")
    assert db(select(func.count(Vote.id))) == 0


def test_double_submit_stores_one_vote_and_moves_on(client, study, session):
    join_and_consent(client, study)
    page = client.get("/e/pair")
    choices = {c.key: "left" for c in study.criteria}
    first, second = answer(client, page, choices), answer(client, page, choices)
    assert first.status_code == second.status_code == 303
    assert second.headers["location"] == "/e/pair"
    assert db(select(func.count(Vote.id))) == 1
    nxt = client.get("/e/pair")
    assert "Pair 2 of 3" in nxt.text and _hidden(nxt, "assignment") != _hidden(page, "assignment")


def test_foreign_assignment_is_refused(client, study, session):
    join_and_consent(client, study)
    mine = client.get("/e/pair")
    with TestClient(create_app()) as other:
        join_and_consent(other, study)
        theirs = other.get("/e/pair")
        data = {"csrf_token": _hidden(theirs, "csrf_token"), "assignment": _hidden(mine, "assignment"),
                **{f"c_{c.key}": "left" for c in study.criteria}}
        r = other.post("/e/vote", data=data, follow_redirects=False)
    assert r.status_code == 403 and "another session" in r.text
    assert db(select(func.count(Vote.id))) == 0


def test_closing_the_browser_resumes_the_same_pair(client, study):
    join_and_consent(client, study)
    page = client.get("/e/pair")
    cookie = client.cookies.get("bp_eval")
    with TestClient(create_app()) as fresh:  # a new browser process with the persistent cookie
        fresh.cookies.set("bp_eval", cookie)
        again = fresh.get("/e/pair")
    assert _hidden(again, "assignment") == _hidden(page, "assignment")


def test_without_a_session_the_pair_page_says_what_to_do(client, study):
    r = client.get("/e/pair")
    assert r.status_code == 401 and "invite link" in r.text
    client.cookies.set("bp_eval", "tampered.value.sig")
    assert client.get("/e/pair").status_code == 401


def test_completing_the_session_shows_the_code_and_redirect(client, study, session):
    join_and_consent(client, study)
    for _ in range(3):
        page = client.get("/e/pair")
        assert answer(client, page, {c.key: "tie" for c in study.criteria}).status_code == 303
    r = client.get("/e/pair", follow_redirects=False)
    assert r.headers["location"] == "/e/done"
    done = client.get("/e/done")
    ev = db(select(Evaluator))
    assert ev.completion_code in done.text
    link = _soup(done).find(id="return-link")["href"]
    assert parse_qs(urlsplit(link).query) == {"x": ["1"], "cc": [ev.completion_code]}


def test_media_is_served_blind_and_cacheable(client, study, session):
    clip = db(select(Clip))
    r = client.get(f"/m/{clip.media_token}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert r.headers["cache-control"].startswith("private, max-age=")
    assert "last-modified" not in r.headers and "content-disposition" not in r.headers
    assert clip.sha256 not in r.headers["etag"]
    assert client.get(f"/m/{clip.media_token}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    missing = client.get("/m/nope")
    assert missing.status_code == 404 and missing.text == "Not found"
    session.execute(update(Clip).where(Clip.id == clip.id).values(status="failed"))
    session.commit()
    assert client.get(f"/m/{clip.media_token}").status_code == 404


def _with_metadata(gif: bytes) -> bytes:
    """Insert a comment and an XMP application block after the global colour table, as some encoders do."""
    packed = gif[10]
    pos = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
    comment = b"\x21\xfe" + bytes([24]) + b"made by zz-secret-model!" + b"\x00"
    xmp = b"\x21\xff\x0bXMP DataXMP" + bytes([9]) + b"<x:model>" + b"\x00"
    return gif[:pos] + comment + xmp + gif[pos:]


def test_gif_metadata_is_stripped_and_frames_kept():
    original = gif_bytes(frames=5)
    tagged = _with_metadata(original)
    clean = strip_gif_metadata(tagged)
    assert b"zz-secret-model" not in clean and b"XMP" not in clean
    assert clean == strip_gif_metadata(original)
    a, b = Image.open(io.BytesIO(original)), Image.open(io.BytesIO(clean))
    assert a.n_frames == b.n_frames == 5
    for i in range(5):
        a.seek(i)
        b.seek(i)
        assert a.convert("RGB").tobytes() == b.convert("RGB").tobytes()
        assert a.info.get("duration") == b.info.get("duration")
    assert b.info.get("loop") == 0  # NETSCAPE2.0 looping block is kept
    with pytest.raises(ValueError):
        strip_gif_metadata(b"\x89PNG not a gif")
    with pytest.raises(ValueError):
        strip_gif_metadata(original[:-20])


def test_served_gif_has_no_metadata(client, study, session):
    from app.media.storage import media_path

    clip = db(select(Clip))
    media_path(clip.storage_name).write_bytes(_with_metadata(media_path(clip.storage_name).read_bytes()))
    body = client.get(f"/m/{clip.media_token}").content
    assert b"zz-secret-model" not in body and body[:6] == b"GIF89a"


def test_votes_go_to_the_right_assignment_rows(client, study):
    """The form's hidden token is the evaluator's open assignment, and the vote lands on it."""
    join_and_consent(client, study)
    page = client.get("/e/pair")
    answer(client, page, {c.key: "right" for c in study.criteria})
    with get_sessionmaker()() as s:
        a = s.scalar(select(Assignment).where(Assignment.token == _hidden(page, "assignment")))
        assert a.status == "done"
        assert s.scalar(select(Vote.assignment_id)) == a.id


def test_join_rate_limit_per_address(client, session):
    # No cap on sessions per address here: this is about the rate (tests/security/test_swarm.py: the cap).
    study = make_study(session, qc={"join_rate_limit_per_minute": 2, "sessions_per_address": 0})
    make_pairs(session, study)
    session.commit()
    for _ in range(2):
        client.cookies.clear()
        join_and_consent(client, study)
    client.cookies.clear()
    page = client.get(f"/join/{study.invite_token}")
    r = client.post(f"/join/{study.invite_token}",
                    data={"csrf_token": _hidden(page, "csrf_token"), "consent": "yes"}, follow_redirects=False)
    assert r.status_code == 429 and "Too many new sessions" in r.text
    api = client.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token})
    assert api.status_code == 429 and api.headers["retry-after"]
    assert db(select(func.count(Evaluator.id))) == 2
