"""The evaluator JSON API: join, current pair, vote; every refusal a clear 4xx."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.db import get_sessionmaker
from app.models import Pair, Vote, VoteChoice
from tests.factories import make_pairs, make_study


@pytest.fixture
def study(session):
    study = make_study(session, n_prompts=3, pairs_per_session=2)
    make_pairs(session, study)
    assert len(study.criteria) == 6
    session.commit()
    return study


def _count(model) -> int:
    with get_sessionmaker()() as s:
        return s.scalar(select(func.count(model.id)))


def _join(client, study, **extra) -> dict:
    r = client.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token, **extra})
    assert r.status_code == 201, r.text
    return {"X-Evaluator-Token": r.json()["evaluator_token"]}


def test_full_session_over_the_api(client, study):
    headers = _join(client, study, external_id="P-1")
    for i in range(2):
        body = client.get("/api/v1/evaluate/pair", headers=headers).json()
        assert body["status"] == "pair" and body["done"] == i and body["total"] == 2
        pair = body["pair"]
        assert [c["key"] for c in pair["criteria"]] == [c.key for c in study.criteria]
        assert client.get(pair["left_media_url"]).headers["content-type"] == "image/gif"
        vote = {"assignment_token": pair["assignment_token"], "choices": {c.key: "left" for c in study.criteria},
                "client_time_ms": 1500}
        assert client.post("/api/v1/evaluate/votes", json=vote, headers=headers).json()["status"] == "recorded"
        again = client.post("/api/v1/evaluate/votes", json=vote, headers=headers)
        assert again.status_code == 200 and again.json()["status"] == "already_recorded"
    done = client.get("/api/v1/evaluate/pair", headers=headers).json()
    assert done["status"] == "done" and done["completion_code"] and done["pair"] is None
    assert _count(Vote) == 2 and _count(VoteChoice) == 12


def test_refusals_are_clear(client, study):
    assert client.post("/api/v1/evaluate/join", json={"invite_token": "nope"}).status_code == 404
    r = client.get("/api/v1/evaluate/pair")
    assert r.status_code == 401 and "X-Evaluator-Token" in r.json()["detail"]
    assert client.get("/api/v1/evaluate/pair", headers={"X-Evaluator-Token": "forged"}).status_code == 401
    headers = _join(client, study)
    pair = client.get("/api/v1/evaluate/pair", headers=headers).json()["pair"]
    partial = {"assignment_token": pair["assignment_token"], "choices": {"text_relevance": "left"}}
    r = client.post("/api/v1/evaluate/votes", json=partial, headers=headers)
    assert r.status_code == 422 and "Overall quality" in r.json()["detail"]
    assert "Motion amplitude" in r.json()["missing"]
    bad = {"assignment_token": pair["assignment_token"], "choices": {c.key: "up" for c in study.criteria}}
    assert client.post("/api/v1/evaluate/votes", json=bad, headers=headers).status_code == 422
    other = _join(client, study)
    full = {"assignment_token": pair["assignment_token"], "choices": {c.key: "tie" for c in study.criteria}}
    r = client.post("/api/v1/evaluate/votes", json=full, headers=other)
    assert r.status_code == 403 and "another session" in r.json()["detail"]
    assert _count(Vote) == 0


def test_media_urls_and_tokens_in_the_openapi_schema(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/evaluate/votes" in schema["paths"]
    assert "/m/{media_token}" not in schema["paths"]  # HTML/media routes stay out of the API docs


def test_a_vote_is_committed_before_the_response_says_recorded(engine, study, monkeypatch):
    """The default FastAPI scope would commit after the response left: a client could be told "recorded"
    about a vote that then failed to commit."""
    from fastapi.testclient import TestClient
    from sqlalchemy.orm import Session

    from app.main import create_app

    events: list[str] = []
    real_commit = Session.commit

    def commit(self):
        real_commit(self)
        events.append("commit")

    monkeypatch.setattr(Session, "commit", commit)
    app = create_app()

    async def recording(scope, receive, send):
        async def send_and_note(message):
            if message["type"] == "http.response.start":
                events.append("response")
            await send(message)

        await app(scope, receive, send_and_note)

    with TestClient(recording) as client:
        headers = _join(client, study)
        pair = client.get("/api/v1/evaluate/pair", headers=headers).json()["pair"]
        events.clear()
        vote = {"assignment_token": pair["assignment_token"], "choices": {c.key: "tie" for c in study.criteria}}
        assert client.post("/api/v1/evaluate/votes", json=vote, headers=headers).json()["status"] == "recorded"
    assert "commit" in events and events.index("commit") < events.index("response"), events


def test_one_request_per_vote_with_next(client, study):
    """``POST /votes?next=true`` answers with what ``GET /pair`` would: a client needs one request per vote, and
    the pair it is handed is the one reserved for it (a GET afterwards returns the same assignment)."""
    headers = _join(client, study)
    body = client.get("/api/v1/evaluate/pair", headers=headers).json()
    seen = []
    for i in range(2):
        pair = body["pair"]
        seen.append(pair["assignment_token"])
        vote = {"assignment_token": pair["assignment_token"], "choices": {c.key: "right" for c in study.criteria}}
        answer = client.post("/api/v1/evaluate/votes?next=true", json=vote, headers=headers).json()
        assert answer["status"] == "recorded"
        body = answer["next"]
        assert body["done"] == i + 1
        if body["status"] == "pair":
            again = client.get("/api/v1/evaluate/pair", headers=headers).json()
            assert again["pair"]["assignment_token"] == body["pair"]["assignment_token"] not in seen
    assert body["status"] == "done" and body["completion_code"] and answer["completed"] is True
    # Each vote counted on its pair, the last one too (it reserved no next pair to count it beside).
    with get_sessionmaker()() as s:
        assert s.scalar(select(func.sum(Pair.votes_count)).where(Pair.kind == "normal")) == 2
    # A replay of the last vote stores nothing and still says where the session stands.
    replay = client.post("/api/v1/evaluate/votes?next=true", json=vote, headers=headers).json()
    assert replay["status"] == "already_recorded" and replay["next"]["status"] == "done"
    # Without the flag the answer is as before.
    assert client.post("/api/v1/evaluate/votes", json=vote, headers=headers).json()["next"] is None
    assert _count(Vote) == 2 and _count(VoteChoice) == 12
    with get_sessionmaker()() as s:  # and the replays counted nothing
        assert s.scalar(select(func.sum(Pair.votes_count)).where(Pair.kind == "normal")) == 2


def test_next_refused_when_the_vote_is_refused(client, study):
    headers = _join(client, study)
    pair = client.get("/api/v1/evaluate/pair", headers=headers).json()["pair"]
    partial = {"assignment_token": pair["assignment_token"], "choices": {"text_relevance": "left"}}
    r = client.post("/api/v1/evaluate/votes?next=true", json=partial, headers=headers)
    assert r.status_code == 422 and "next" not in r.json()
    # Nothing was reserved either: the current pair is still the one shown.
    assert client.get("/api/v1/evaluate/pair", headers=headers).json()["pair"]["assignment_token"] == \
        pair["assignment_token"]
    assert _count(Vote) == 0
