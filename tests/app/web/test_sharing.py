"""Study ownership (issue 12): a researcher sees, runs and changes only their own studies and those shared
with them; another researcher's study is a 404 everywhere; the owner and admins share and unshare.

The attack replayed: a second researcher read, closed, reopened, switched off the QC of, and queued
generation on someone else's study, through the API and the pages.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from app.db import session_scope
from app.models import Batch, Study, StudyCollaborator
from tests.factories import NO_CHECKS, make_study, make_user
from tests.support.web import csrf_token, logged_in_client

PASSWORD = "correct horse battery"

@pytest.fixture
def app(engine):
    from app.main import create_app

    return create_app()


@pytest.fixture
def people(session):
    owner = make_user(session, email="owner@lab.org", password=PASSWORD)
    other = make_user(session, email="other@lab.org", password=PASSWORD)
    admin = make_user(session, role="admin", email="admin@lab.org", password=PASSWORD)
    study = make_study(session, status="open", created_by_id=owner.id, qc=NO_CHECKS)
    study.models[0].preset = "animatediff"
    session.commit()
    return {"owner": owner, "other": other, "admin": admin, "study_id": study.id}


def _study(study_id: int) -> tuple[str, dict, int]:
    with session_scope() as s:
        study = s.get(Study, study_id)
        batches = len(s.scalars(select(Batch).where(Batch.study_id == study_id)).all())
        return study.status, dict(study.qc), batches


def test_another_researcher_can_do_nothing_to_the_study(app, people):
    study_id = people["study_id"]
    before = _study(study_id)
    other = logged_in_client(app, "other@lab.org", PASSWORD)
    csrf = csrf_token(other)
    api_attempts = [
        ("GET", f"/api/v1/studies/{study_id}", None),
        ("GET", f"/api/v1/studies/{study_id}/results", None),
        ("GET", f"/api/v1/studies/{study_id}/progress", None),
        ("POST", f"/api/v1/studies/{study_id}/status", {"status": "closed"}),
        ("PATCH", f"/api/v1/studies/{study_id}/qc", {"enabled": False}),
        ("POST", f"/api/v1/studies/{study_id}/generation/queue", {}),
        ("POST", f"/api/v1/studies/{study_id}/generation/retry", {}),
        ("POST", f"/api/v1/studies/{study_id}/collaborators", {"email": "other@lab.org"}),
    ]
    for method, url, body in api_attempts:
        r = other.request(method, url, json=body)
        assert r.status_code == 404, (method, url, r.status_code)
        assert r.json()["detail"] == f"There is no study with id {study_id}."
    for url, data in ((f"/studies/{study_id}/status", {"status": "closed"}),
                      (f"/studies/{study_id}/generation/queue", {}),
                      (f"/studies/{study_id}/collaborators", {"email": "other@lab.org"})):
        assert other.post(url, data={"csrf_token": csrf, **data}).status_code == 404, url
    for url in (f"/studies/{study_id}", f"/studies/{study_id}/results"):
        assert other.get(url).status_code == 404, url
    assert _study(study_id) == before  # nothing was closed, switched off or queued
    assert other.get("/api/v1/studies").json() == []


def test_the_owner_shares_the_study_and_the_collaborator_works_on_it(app, people):
    study_id = people["study_id"]
    owner = logged_in_client(app, "owner@lab.org", PASSWORD)
    page = owner.get(f"/studies/{study_id}").text
    assert 'id="sharing"' in page and "owner@lab.org" in page
    r = owner.post(f"/studies/{study_id}/collaborators",
                   data={"csrf_token": csrf_token(owner, f"/studies/{study_id}"), "email": "Other@Lab.org"})
    assert r.status_code == 303 and r.headers["location"].endswith("#sharing")
    other = logged_in_client(app, "other@lab.org", PASSWORD)
    assert [s["id"] for s in other.get("/api/v1/studies").json()] == [study_id]
    assert other.get(f"/studies/{study_id}").status_code == 200
    r = other.post(f"/api/v1/studies/{study_id}/status", json={"status": "closed"})
    assert r.status_code == 200 and r.json()["status"] == "closed"
    # A collaborator works on the study but does not decide who else sees it.
    r = other.post(f"/api/v1/studies/{study_id}/collaborators", json={"email": "admin@lab.org"})
    assert r.status_code == 403 and "owner or an admin" in r.json()["detail"]
    assert "Share with" not in other.get(f"/studies/{study_id}").text
    # Unshared: the study is gone for them again.
    other_id = people["other"].id
    r = owner.post(f"/studies/{study_id}/collaborators/{other_id}/remove",
                   data={"csrf_token": csrf_token(owner, f"/studies/{study_id}")})
    assert r.status_code == 303
    assert other.get(f"/api/v1/studies/{study_id}").status_code == 404


def test_sharing_through_the_api_and_its_refusals(app, people):
    study_id = people["study_id"]
    owner = TestClient(app)
    assert owner.post("/api/v1/login", json={"email": "owner@lab.org", "password": PASSWORD}).status_code == 200
    r = owner.post(f"/api/v1/studies/{study_id}/collaborators", json={"email": "nobody@lab.org"})
    assert r.status_code == 400 and "No account has the email nobody@lab.org" in r.json()["detail"]
    r = owner.post(f"/api/v1/studies/{study_id}/collaborators", json={"email": "owner@lab.org"})
    assert r.status_code == 400 and "owns this study" in r.json()["detail"]
    r = owner.post(f"/api/v1/studies/{study_id}/collaborators", json={"email": "other@lab.org"})
    assert r.status_code == 200 and [u["email"] for u in r.json()["collaborators"]] == ["other@lab.org"]
    again = owner.post(f"/api/v1/studies/{study_id}/collaborators", json={"email": "other@lab.org"})
    assert again.json() == r.json()  # sharing twice adds nothing
    assert r.json()["owner"] == "owner@lab.org" and r.json()["can_share"] is True
    other_id = people["other"].id
    assert owner.delete(f"/api/v1/studies/{study_id}/collaborators/{other_id}").json()["collaborators"] == []
    r = owner.delete(f"/api/v1/studies/{study_id}/collaborators/{other_id}")
    assert r.status_code == 400 and "not shared" in r.json()["detail"]
    with session_scope() as s:
        assert s.scalars(select(StudyCollaborator)).all() == []


def test_admins_see_and_share_every_study(app, people):
    study_id = people["study_id"]
    admin = logged_in_client(app, "admin@lab.org", PASSWORD)
    assert [s["id"] for s in admin.get("/api/v1/studies").json()] == [study_id]
    r = admin.post(f"/api/v1/studies/{study_id}/collaborators", json={"email": "other@lab.org"})
    assert r.status_code == 200 and r.json()["can_share"] is True


def test_a_study_without_an_owner_is_for_admins_only(app, session, people):
    orphan = make_study(session)
    session.commit()
    owner = logged_in_client(app, "owner@lab.org", PASSWORD)
    assert owner.get(f"/api/v1/studies/{orphan.id}").status_code == 404
    assert logged_in_client(app, "admin@lab.org", PASSWORD).get(f"/api/v1/studies/{orphan.id}").status_code == 200


def test_the_cli_creates_with_an_owner_and_shares(people, monkeypatch):
    from app.cli import app as cli

    # The schema comes from the models here; the CLI's migration check is tested in tests/app/cli.
    for module in ("app.cli.studies",):
        monkeypatch.setattr(f"{module}.require_migrated", lambda: None)
    run = CliRunner().invoke
    r = run(cli, ["study", "create", "--name", "Mine", "--model", "a", "--model", "b", "--theme", "nature",
                  "--owner", "owner@lab.org"])
    assert r.exit_code == 0, r.output
    with session_scope() as s:
        study = s.scalars(select(Study).where(Study.name == "Mine")).one()
        assert study.created_by_id == people["owner"].id
        study_id = study.id
    r = run(cli, ["study", "create", "--name", "Nobody's", "--model", "a", "--model", "b", "--owner", "x@y.org"])
    assert r.exit_code == 1 and "No account has the email x@y.org" in r.output
    r = run(cli, ["study", "share", str(study_id), "other@lab.org"])
    assert r.exit_code == 0 and "Shared with: other@lab.org" in r.output
    r = run(cli, ["study", "share", str(study_id), "nobody@lab.org"])
    assert r.exit_code == 1 and "Nothing was changed" in r.output
    r = run(cli, ["study", "share", str(study_id), "other@lab.org", "--remove"])
    assert r.exit_code == 0 and "Shared with: nobody" in r.output
