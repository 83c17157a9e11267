"""Fuzz the JSON API from its own OpenAPI schema (schemathesis, in-process over ASGI): no 5xx, ever, and
every refusal is a 4xx whose JSON body says what was wrong (issue 5).

Requests go out three ways per case: anonymous, as a logged-in admin, and as an evaluator, so the fuzzer
reaches past the login checks into the handlers. Examples per operation are bounded so the run stays short.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings

from app.main import create_app
from tests.factories import make_pairs, make_study, make_user

pytestmark = pytest.mark.slow

APP = create_app()
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)
PASSWORD = "fuzz-admin-password-123"


@pytest.fixture
def identities(session):
    """Cookie / header sets for an admin and an evaluator of an open study with pairs."""
    admin = make_user(session, role="admin", email="fuzz-admin@example.org", password=PASSWORD)
    study = make_study(session, n_prompts=3)
    make_pairs(session, study)
    session.commit()
    # A fresh app instance: the fuzzed one's login throttle has seen many wrong passwords by now.
    with TestClient(create_app()) as client:
        r = client.post("/api/v1/login", json={"email": admin.email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        admin_cookie = client.cookies.get("bp_session")
        r = client.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token})
        assert r.status_code == 201, r.text
        evaluator_token = r.json()["evaluator_token"]
    return [
        {},
        {"Cookie": f"bp_session={admin_cookie}"},
        {"X-Evaluator-Token": evaluator_token},
    ]


def _check(case, response) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            pytest.fail(f"{where}: a refusal must be JSON with a message, got {response.text[:200]!r}")
        detail = body.get("detail") if isinstance(body, dict) else None
        assert detail, f"{where}: a refusal must say what was wrong, got {body!r}"


@schema.parametrize()
# No shrinking: a failure is reported with its reproducing request at once, and the run stays short.
@settings(max_examples=6, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_never_fails_with_a_server_error(case, identities):
    for headers in identities:
        response = case.call(headers={**(case.headers or {}), **headers})
        _check(case, response)
