"""X-Forwarded-For is believed only from the proxies the operator names (issue 12).

The attack replayed: against ``blindpair serve`` on loopback, each failed login and each join sent a new
``X-Forwarded-For``. uvicorn believed the header from 127.0.0.1, so every request looked like a new client:
the login throttle and the join limit never counted past one. Here a real ``blindpair serve`` is attacked
over HTTP, and the app is checked with the test client from a proxy's and a stranger's address.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app import config
from app.config import Settings
from app.migrate import upgrade
from app.models import Evaluator
from tests.factories import make_study, make_user
from tests.support.servers import free_port, stop_process, wait_until_answering

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
LOGIN_FAILURES_ALLOWED = 10  # app.security.LoginThrottle's default
JOIN_LIMIT = 3


@contextmanager
def live_server(tmp_path: Path, **env: str) -> Iterator[tuple[str, int]]:
    """``blindpair serve`` on a free loopback port, on a migrated SQLite file with one user and one open study.

    Yields the base URL and the study's invite token.
    """
    data_dir = tmp_path / "live"
    url = f"sqlite:///{data_dir / 'live.sqlite'}"
    upgrade("head", url=url)
    engine = create_engine(url)
    with Session(engine) as session:
        make_user(session, email="r@lab.org", password=PASSWORD)
        # No per-address session cap: the join *rate* limit is what is attacked here.
        study = make_study(session, qc={"sessions_per_address": 0})
        invite = study.invite_token
        session.commit()
    engine.dispose()
    port = free_port()
    child_env = {**os.environ, "BLINDPAIR_DATABASE_URL": url, "BLINDPAIR_DATA_DIR": str(data_dir),
                 "BLINDPAIR_ENVIRONMENT": "test", "BLINDPAIR_JOIN_RATE_LIMIT_PER_MINUTE": str(JOIN_LIMIT),
                 "BLINDPAIR_BROKER_URL": "", "BLINDPAIR_FORWARDED_ALLOW_IPS": "", "PYTHONUNBUFFERED": "1", **env}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from app.cli import main; main()", "serve", "--port",
                                 str(port)], cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        why = wait_until_answering(proc, base + "/login", 60)
        assert why is None, f"blindpair serve {why}:\n" + log.read_text()[-3000:]
        yield base, invite
    finally:
        stop_process(proc)


def _failed_logins_then_right_password(post) -> int:
    """Each failed login claims a new address; returns the status of the right password afterwards."""
    for i in range(LOGIN_FAILURES_ALLOWED):
        r = post("/api/v1/login", json={"email": "r@lab.org", "password": "wrong guess"},
                 headers={"X-Forwarded-For": f"198.51.100.{i + 1}"})
        assert r.status_code == 401, r.text
    return post("/api/v1/login", json={"email": "r@lab.org", "password": PASSWORD},
                headers={"X-Forwarded-For": "198.51.100.200"}).status_code


def _joins(post, invite: str, n: int) -> list[int]:
    return [post("/api/v1/evaluate/join", json={"invite_token": invite},
                 headers={"X-Forwarded-For": f"203.0.113.{i + 1}"}).status_code for i in range(n)]


def test_a_default_server_ignores_x_forwarded_for_from_loopback(tmp_path):
    with live_server(tmp_path) as (base, invite), httpx.Client(base_url=base, timeout=10) as http:
        assert _failed_logins_then_right_password(http.post) == 429
        assert _joins(http.post, invite, JOIN_LIMIT + 1) == [201] * JOIN_LIMIT + [429]


def test_a_named_proxy_is_believed(tmp_path):
    """With BLINDPAIR_FORWARDED_ALLOW_IPS=127.0.0.1 the proxy on loopback forwards distinct clients."""
    with live_server(tmp_path, BLINDPAIR_FORWARDED_ALLOW_IPS="127.0.0.1") as (base, invite), \
            httpx.Client(base_url=base, timeout=10) as http:
        assert _failed_logins_then_right_password(http.post) == 200
        assert _joins(http.post, invite, JOIN_LIMIT + 1) == [201] * (JOIN_LIMIT + 1)


# --- the app itself, from a named proxy's address and from anyone else's ------------------------------------

PROXY = "10.0.0.5"
STRANGER = "192.0.2.44"


@pytest.fixture
def proxied_app(engine, monkeypatch):
    monkeypatch.setenv("BLINDPAIR_FORWARDED_ALLOW_IPS", f"{PROXY}, 10.1.0.0/16")
    monkeypatch.setenv("BLINDPAIR_JOIN_RATE_LIMIT_PER_MINUTE", str(JOIN_LIMIT))
    config.get_settings.cache_clear()
    from app.main import create_app

    return create_app()


@pytest.fixture
def world(session):
    make_user(session, email="r@lab.org", password=PASSWORD)
    study = make_study(session, qc={"sessions_per_address": 0})
    session.commit()
    return study.invite_token


def test_forwarding_headers_from_anyone_but_the_proxy_are_ignored(proxied_app, world):
    stranger = TestClient(proxied_app, client=(STRANGER, 40000))
    assert _failed_logins_then_right_password(stranger.post) == 429
    assert _joins(stranger.post, world, JOIN_LIMIT + 1) == [201] * JOIN_LIMIT + [429]


def test_the_proxy_forwards_each_client_separately(proxied_app, world):
    proxy = TestClient(proxied_app, client=(PROXY, 40000))
    assert _failed_logins_then_right_password(proxy.post) == 200
    assert _joins(proxy.post, world, JOIN_LIMIT + 1) == [201] * (JOIN_LIMIT + 1)
    # A proxy in a named network counts too; a client behind it cannot prepend a fake address of its own:
    # the nearest address that is not a named proxy is the client.
    chained = TestClient(proxied_app, client=("10.1.2.3", 40000))
    for _ in range(LOGIN_FAILURES_ALLOWED):
        chained.post("/api/v1/login", json={"email": "r@lab.org", "password": "wrong guess"},
                     headers={"X-Forwarded-For": f"6.6.6.{_}, 198.51.100.77"})
    r = chained.post("/api/v1/login", json={"email": "r@lab.org", "password": PASSWORD},
                     headers={"X-Forwarded-For": "7.7.7.7, 198.51.100.77"})
    assert r.status_code == 429


def test_the_evaluators_address_hash_is_of_the_real_client(proxied_app, world, session):
    from app.services.assignments import _ip_hash

    TestClient(proxied_app, client=(STRANGER, 40000)).post(
        "/api/v1/evaluate/join", json={"invite_token": world}, headers={"X-Forwarded-For": "203.0.113.9"})
    TestClient(proxied_app, client=(PROXY, 40000)).post(
        "/api/v1/evaluate/join", json={"invite_token": world}, headers={"X-Forwarded-For": "203.0.113.10"})
    hashes = session.scalars(select(Evaluator.ip_hash).order_by(Evaluator.id)).all()
    assert hashes == [_ip_hash(STRANGER), _ip_hash("203.0.113.10")]


def test_a_proxy_setting_that_is_not_an_address_is_refused_with_what_to_write():
    with pytest.raises(ValidationError, match="not an IP address or network"):
        Settings(forwarded_allow_ips="my-proxy.local")
    assert Settings(forwarded_allow_ips="127.0.0.1, 10.0.0.0/8, ::1").forwarded_allow_list == [
        "127.0.0.1", "10.0.0.0/8", "::1"]
    assert Settings().forwarded_allow_list == []  # the default: nobody is believed
