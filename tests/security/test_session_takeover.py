"""Attack: take over a participant's session knowing only their platform id (issue 12, "Session takeover by
external id").

A PROLIFIC_PID is no secret (it is in links, exports, screenshots). Before this issue, joining with a known
PID resumed that participant's unfinished session, and finishing it showed their completion code. Now a
session is resumed only with its cookie (or API token), or with the platform's own id of the attempt
(Prolific's SESSION_ID, MTurk's assignmentId) beside the participant id; anything else is refused, starts
nothing, and shows no code.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import get_sessionmaker
from app.main import create_app
from app.models import Evaluator
from tests.factories import make_pairs, make_study

PID = "5f3a9c0e1d2b4a0012345678"
SESSION = "sess-6b1f0c2d9e8a7f60"


@pytest.fixture
def app(engine):
    return create_app()


@pytest.fixture
def study(session):
    study = make_study(session, n_prompts=4, pairs_per_session=3, qc={"enabled": False},
                       redirect_url="https://app.prolific.example/submissions/complete?cc={code}")
    make_pairs(session, study)
    session.commit()
    return study


def browser(app) -> TestClient:
    return TestClient(app, follow_redirects=False)


def _hidden(page, name: str) -> str:
    field = BeautifulSoup(page.text, "html.parser").find("input", attrs={"name": name})
    return field["value"] if field else ""


def open_link(http: TestClient, study, **params):
    """Open the invite link with the platform's parameters and consent, as a participant's browser does."""
    page = http.get(f"/join/{study.invite_token}?{urlencode(params)}")
    if page.status_code != 200:
        return page
    return http.post(f"/join/{study.invite_token}", data={
        "csrf_token": _hidden(page, "csrf_token"), "consent": "yes", "external_id": _hidden(page, "external_id"),
        "platform_session_id": _hidden(page, "platform_session_id")})


def vote_once(http: TestClient) -> str:
    page = http.get("/e/pair")
    assert page.status_code == 200, page.text
    token = _hidden(page, "assignment")
    keys = [i["name"] for i in BeautifulSoup(page.text, "html.parser").find_all("input", attrs={"type": "radio"})]
    data = {"csrf_token": _hidden(page, "csrf_token"), "assignment": token, **dict.fromkeys(set(keys), "tie")}
    assert http.post("/e/vote", data=data).status_code == 303
    return token


def victim_code() -> str:
    with get_sessionmaker()() as s:
        return s.scalar(select(Evaluator.completion_code).where(Evaluator.external_id == PID))


def test_a_known_participant_id_opens_nothing(app, study):
    victim = browser(app)
    assert open_link(victim, study, PROLIFIC_PID=PID, STUDY_ID="st-1", SESSION_ID=SESSION).status_code == 303
    vote_once(victim)
    vote_once(victim)  # two of three pairs: the session is unfinished
    code = victim_code()

    # Pages: the PID alone, and the PID with a guessed session id.
    for params in ({"PROLIFIC_PID": PID}, {"PROLIFIC_PID": PID, "SESSION_ID": "guess"}):
        attacker = browser(app)
        r = open_link(attacker, study, **params)
        assert r.status_code == 409 and "already in progress" in r.text, r.text
        assert "bp_eval" not in r.cookies
        for path in ("/e/pair", "/e/done"):
            seen = attacker.get(path)
            assert seen.status_code == 401 and code not in seen.text
    # The API: the same refusal, and no token.
    api = browser(app)
    for body in ({"external_id": PID}, {"external_id": PID, "platform_session_id": "guess"}):
        r = api.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token, **body})
        assert r.status_code == 409 and "evaluator_token" not in r.json() and code not in r.text
    with get_sessionmaker()() as s:
        assert s.query(Evaluator).count() == 1  # nothing was started for the attacker either


def test_the_participant_resumes_with_the_cookie_or_the_platform_session_id(app, study):
    first = browser(app)
    assert open_link(first, study, PROLIFIC_PID=PID, SESSION_ID=SESSION).status_code == 303
    on_screen = _hidden(first.get("/e/pair"), "assignment")

    same_cookie = browser(app)  # the browser restarted: the cookie is all it has
    same_cookie.cookies.set("bp_eval", first.cookies.get("bp_eval"))
    assert _hidden(same_cookie.get("/e/pair"), "assignment") == on_screen

    other_device = browser(app)  # a new device, opened from the platform's link again
    assert open_link(other_device, study, PROLIFIC_PID=PID, SESSION_ID=SESSION).status_code == 303
    assert _hidden(other_device.get("/e/pair"), "assignment") == on_screen
    for _ in range(3):
        vote_once(other_device)
    done = other_device.get("/e/done")
    assert done.status_code == 200 and victim_code() in done.text

    # Finished: the PID alone still shows nothing, the participant's own link still shows their code.
    late = open_link(browser(app), study, PROLIFIC_PID=PID)
    assert late.status_code == 409 and "already been completed" in late.text and victim_code() not in late.text
    again = browser(app)
    assert open_link(again, study, PROLIFIC_PID=PID, SESSION_ID=SESSION).status_code == 303
    assert victim_code() in again.get("/e/done").text


def test_the_api_resumes_only_with_the_platform_session_id(app, study):
    http = browser(app)
    r = http.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token, "external_id": PID,
                                                 "platform_session_id": SESSION})
    assert r.status_code == 201
    pair = http.get("/api/v1/evaluate/pair", headers={"X-Evaluator-Token": r.json()["evaluator_token"]}).json()
    again = http.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token, "external_id": PID,
                                                     "platform_session_id": SESSION})
    assert again.status_code == 201
    resumed = http.get("/api/v1/evaluate/pair", headers={"X-Evaluator-Token": again.json()["evaluator_token"]})
    assert resumed.json()["pair"]["assignment_token"] == pair["pair"]["assignment_token"]
    # MTurk's preview placeholder is not a session id: it proves nothing.
    page = http.get(f"/join/{study.invite_token}?workerId=W1&assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE")
    assert _hidden(page, "platform_session_id") == ""


def test_a_participant_resumes_from_a_network_at_its_limit(app, study):
    """Two sessions from one household fill its share (2 per address); the first participant, back without the
    cookie but with the platform's link, still gets their session; a third person is refused."""
    home = ("192.0.2.77", 40000)
    first = TestClient(app, client=home, follow_redirects=False)
    assert open_link(first, study, PROLIFIC_PID=PID, SESSION_ID=SESSION).status_code == 303
    on_screen = _hidden(first.get("/e/pair"), "assignment")
    second = TestClient(app, client=home, follow_redirects=False)
    assert open_link(second, study, PROLIFIC_PID="other-pid", SESSION_ID="other-session").status_code == 303
    back = TestClient(app, client=home, follow_redirects=False)
    assert open_link(back, study, PROLIFIC_PID=PID, SESSION_ID=SESSION).status_code == 303
    assert _hidden(back.get("/e/pair"), "assignment") == on_screen
    third = open_link(TestClient(app, client=home, follow_redirects=False), study, PROLIFIC_PID="third",
                      SESSION_ID="third-session")
    assert third.status_code == 403 and "ask the researcher" in third.text
