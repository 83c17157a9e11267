"""The study's plan over HTTP: stated before the first vote, frozen with a hash, amended visibly, and its
anytime-valid decisions on the dashboard, in the report and in results.json; the invite link closes itself."""

from __future__ import annotations

import json

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import func, select

from app import db
from app.models import Study, StudyPlan
from app.services import plans
from app.services.results_cache import get_cache
from tests.app.services.results_factory import voted_study
from tests.app.web.test_results import _as
from tests.factories import make_study
from tests.support.web import csrf_of

pytestmark = pytest.mark.usefixtures("fresh_results_cache")

NI = {"kind": "non_inferiority", "model": "animatediff", "reference": "lightning", "margin": "0.45",
      "alpha": "0.05", "power": "0.8", "budget": "2000", "ties": "drop"}


def _post_plan(client, study_id, **fields):
    page = client.get(f"/studies/{study_id}")
    return client.post(f"/studies/{study_id}/plan", data={"csrf_token": csrf_of(page.text), **fields},
                       follow_redirects=True)


def _plan_rows(_session, study_id):
    """A fresh session's read, closed at once (SQLite transactions here take the write lock: one left open in the
    test's session would hold up the next request)."""
    with db.get_sessionmaker()() as fresh:
        return list(fresh.scalars(select(StudyPlan).where(StudyPlan.study_id == study_id)
                                  .order_by(StudyPlan.version)))


def _status(study_id):
    with db.get_sessionmaker()() as fresh:
        return fresh.get(Study, study_id).status


def test_a_draft_plan_is_frozen_with_a_hash_when_the_study_opens(client, session):
    study = make_study(session, status="draft")
    session.commit()
    _as(client, session, "admin")
    panel = BeautifulSoup(client.get(f"/studies/{study.id}").text, "html.parser").find("section", id="plan")
    assert "No plan stated yet" in panel.text
    assert panel.find("input", attrs={"name": "margin"})["value"] == "0.45"  # the seed's question is offered
    r = _post_plan(client, study.id, **NI)
    assert "Draft plan saved" in r.text
    [row] = _plan_rows(session, study.id)
    assert row.frozen_at is None and row.sha256 is None
    # a draft can still be edited in place
    _post_plan(client, study.id, **(NI | {"margin": "0.4"}))
    [row] = _plan_rows(session, study.id)
    assert row.spec["questions"][0]["margin"] == 0.4

    page = client.get(f"/studies/{study.id}")
    client.post(f"/studies/{study.id}/status", data={"csrf_token": csrf_of(page.text), "status": "open"})
    [row] = _plan_rows(session, study.id)
    assert row.frozen_at is not None and row.votes_at_freeze == 0 and len(row.sha256) == 64
    assert plans.verify(plans.plan_history(session, study_id=study.id)[0], study.id)
    panel = BeautifulSoup(client.get(f"/studies/{study.id}").text, "html.parser").find("section", id="plan")
    assert row.sha256 in panel.text and "after 0 vote(s)" in panel.text


def test_a_frozen_plan_is_only_amended_with_a_reason_and_the_report_shows_both(client, session):
    study = voted_study(session, n_prompts=4, n_evaluators=3)
    session.commit()
    _as(client, session, "admin")
    _post_plan(client, study.id, **NI)
    [v1] = _plan_rows(session, study.id)
    assert v1.frozen_at is not None and v1.votes_at_freeze == 12  # stated after votes: frozen at once, and says so

    r = _post_plan(client, study.id, **(NI | {"margin": "0.40"}))
    assert "Plan not saved" in r.text and "say why it is amended" in r.text
    assert len(_plan_rows(session, study.id)) == 1 and _plan_rows(session, study.id)[0].spec == v1.spec

    _post_plan(client, study.id, **(NI | {"margin": "0.40"}), reason="the pilot showed more ties")
    rows = _plan_rows(session, study.id)
    assert [p.version for p in rows] == [1, 2] and rows[1].previous_sha256 == rows[0].sha256
    assert rows[0].spec["questions"][0]["margin"] == 0.45  # the first version is untouched

    report = client.get(f"/studies/{study.id}/export/report.html")
    soup = BeautifulSoup(report.text, "html.parser")
    versions = soup.select("#plan [data-plan-version]")
    assert [v["data-plan-version"] for v in versions] == ["1", "2"]
    assert "amended: the pilot showed more ties" in versions[1].text
    assert rows[0].sha256 in report.text and rows[1].sha256 in report.text
    assert "stated after 12 vote(s)" in soup.find("section", id="plan").text


def test_bad_plans_say_what_to_change_and_store_nothing(client, session):
    study = make_study(session, status="draft")
    session.commit()
    _as(client, session, "admin")
    for fields, message in (({"margin": "0.6"}, "non-inferiority margin is a share below 50%"),
                            ({"model": "nobody"}, "is not one of the study's models"),
                            ({"reference": "animatediff"}, "must differ"),
                            ({"alpha": "five"}, "Alpha must be a number"),
                            ({"budget": "-3"}, "at least 1 vote"),
                            ({"criteria": "smell"}, "Unknown criteria: smell")):
        text = BeautifulSoup(_post_plan(client, study.id, **(NI | fields)).text, "html.parser").text
        assert "Plan not saved" in text and message in text, fields
    assert session.scalar(select(func.count(StudyPlan.id)).where(StudyPlan.study_id == study.id)) == 0


def test_a_plan_cannot_be_stated_on_someone_elses_study(client, session):
    study = make_study(session, status="draft")
    session.commit()
    _as(client, session, "researcher")
    page = client.get("/")
    r = client.post(f"/studies/{study.id}/plan", data={"csrf_token": csrf_of(page.text), **NI},
                    follow_redirects=False)
    assert r.status_code == 404
    assert session.scalar(select(func.count(StudyPlan.id)).where(StudyPlan.study_id == study.id)) == 0


def test_the_dashboard_decides_says_the_study_can_stop_and_closes_the_invite_link(client, session):
    # the second model wins 75% of decided votes: "animatediff not worse than lightning" is decided early
    study = voted_study(session, n_prompts=24, n_evaluators=12, p_b=0.8)
    study.status = "draft"
    session.commit()
    _as(client, session, "admin")
    _post_plan(client, study.id, **NI, close_when_done="true", criteria="overall_quality")
    study.status = "open"
    session.commit()
    plans.freeze_draft(session, study_id=study.id)
    session.commit()
    get_cache().clear()
    page = BeautifulSoup(client.get(f"/studies/{study.id}/results").text, "html.parser")
    section = page.find("section", id="plan")
    row = section.find("tr", attrs={"data-sequential-criterion": "overall_quality"})
    assert row["data-decision"] == "non-inferior"
    assert "The study can stop" in section.text and "invite link was closed automatically" in section.text
    # the fixed-sample analysis stays beside it, labelled
    assert "Fixed-sample analysis" in page.find("section", id="preference").find("h2").text
    assert _status(study.id) == "closed"
    assert client.get(f"/join/{study.invite_token}").status_code == 409

    data = json.loads(client.get(f"/studies/{study.id}/export/results.json").text)
    [decision] = data["plan"]["decisions"]["criteria"]
    assert decision["decision"] == "non-inferior" and decision["decided_at"] <= 288
    assert data["plan"]["decisions"]["can_stop"] is True
    assert data["plan"]["plan"]["sha256"] == _plan_rows(session, study.id)[0].sha256
    api = client.get(f"/api/v1/studies/{study.id}/results").json()
    assert api["plan"]["decisions"]["criteria"][0]["decision"] == "non-inferior"


def test_without_enough_votes_the_dashboard_says_not_yet_and_keeps_the_link_open(client, session):
    study = voted_study(session, n_prompts=4, n_evaluators=3, p_b=0.8)
    session.commit()
    _as(client, session, "admin")
    _post_plan(client, study.id, **NI, close_when_done="true")
    get_cache().clear()
    page = BeautifulSoup(client.get(f"/studies/{study.id}/results").text, "html.parser")
    section = page.find("section", id="plan")
    assert "Not yet" in section.text
    assert all(r["data-decision"] == "not yet" for r in section.select("[data-sequential-criterion]"))
    assert "at least 20 prompts" in section.text
    assert _status(study.id) == "open"
