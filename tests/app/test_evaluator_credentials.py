"""The evaluator's signed credential (app/deps.py) over the API: a verified token is kept, so every later check
must still refuse it once expired, and a forged or re-keyed one is never accepted."""

from __future__ import annotations

import time

from app import deps
from app.config import get_settings
from app.models import Evaluator
from tests.factories import make_pairs, make_study

PAIR = "/api/v1/evaluate/pair"


def _joined(client, session) -> str:
    study = make_study(session)
    make_pairs(session, study)
    session.commit()
    r = client.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token})
    assert r.status_code == 201, r.text
    return r.json()["evaluator_token"]


def test_a_token_kept_after_its_first_check_still_expires(client, session, monkeypatch):
    token = _joined(client, session)
    assert client.get(PAIR, headers={"X-Evaluator-Token": token}).status_code == 200  # checked, and kept
    signed = time.time()
    monkeypatch.setattr(deps.time, "time", lambda: signed + deps.EVALUATOR_TOKEN_MAX_AGE - 60)
    assert client.get(PAIR, headers={"X-Evaluator-Token": token}).status_code == 200
    monkeypatch.setattr(deps.time, "time", lambda: signed + deps.EVALUATOR_TOKEN_MAX_AGE + 60)
    r = client.get(PAIR, headers={"X-Evaluator-Token": token})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    # A clock set back before the signing (itsdangerous refuses a signature from the future) is refused too.
    monkeypatch.setattr(deps.time, "time", lambda: signed - 3600)
    assert client.get(PAIR, headers={"X-Evaluator-Token": token}).status_code == 401


def test_a_tampered_token_or_one_signed_with_another_secret_is_refused(client, session, monkeypatch):
    token = _joined(client, session)
    assert client.get(PAIR, headers={"X-Evaluator-Token": token}).status_code == 200
    payload, _, rest = token.partition(".")
    other = session.query(Evaluator).count()  # any other content under the same signature
    for forged in (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), f"{payload}x.{rest}", f"{other}.{rest}"):
        assert client.get(PAIR, headers={"X-Evaluator-Token": forged}).status_code == 401
    # A new deployment secret: tokens signed with the old one no longer open a session, kept or not.
    monkeypatch.setenv("BLINDPAIR_SECRET_KEY", "another-secret-" + "x" * 40)
    get_settings.cache_clear()
    assert client.get(PAIR, headers={"X-Evaluator-Token": token}).status_code == 401
