import pytest
from sqlalchemy import select

from app.models import Study, User
from app.services.prompts import load_builtin_suite
from tests.app.services.test_studies import add_vote
from tests.factories import make_evaluator, make_pairs, make_study, make_user

PASSWORD = "correct horse battery"
BODY = {
    "name": "Lightning vs AnimateDiff",
    "models": [{"name": "lightning", "preset": "animatediff-lightning-4step", "overrides": {"steps": 4}},
               {"name": "animatediff", "preset": "animatediff"}],
    "themes": ["wildlife"],
    "votes_per_pair": 4,
}


@pytest.fixture
def api(client, session):
    make_user(session, role="researcher", email="r@lab.org", password=PASSWORD)
    session.commit()
    r = client.post("/api/v1/login", json={"email": "r@lab.org", "password": PASSWORD})
    assert r.status_code == 200 and r.json()["role"] == "researcher"
    return client


def owned(session, **kw) -> Study:
    """A study of the researcher the ``api`` client is logged in as (others' studies are 404 to them)."""
    owner = session.scalars(select(User).where(User.email == "r@lab.org")).one()
    return make_study(session, created_by_id=owner.id, **kw)


def test_login_refuses_wrong_password(client, session):
    make_user(session, email="r@lab.org", password=PASSWORD)
    session.commit()
    r = client.post("/api/v1/login", json={"email": "r@lab.org", "password": "nope nope"})
    assert r.status_code == 401 and r.json()["detail"] == "Email or password is wrong."
    assert client.get("/api/v1/me").status_code == 401


def test_create_get_and_list(api):
    r = api.post("/api/v1/studies", json=BODY)
    assert r.status_code == 201, r.text
    study = r.json()
    assert study["status"] == "draft" and study["votes_per_pair"] == 4 and study["pairs_per_session"] == 10
    assert [(m["name"], m["preset"], m["overrides"]) for m in study["models"]] == [
        ("lightning", "animatediff-lightning-4step", {"steps": 4}), ("animatediff", "animatediff", {})]
    assert study["prompts"] == sum(1 for p in load_builtin_suite() if p.theme == "wildlife")
    assert len(study["criteria"]) == 6 and study["settings"]["frames"] == 16
    assert study["invite_url"].startswith("http://127.0.0.1:8000/join/")
    assert api.get(f"/api/v1/studies/{study['id']}").json() == study
    assert [s["id"] for s in api.get("/api/v1/studies").json()] == [study["id"]]


def test_create_with_own_prompts_and_criteria(api):
    body = {**BODY, "themes": None,
            "prompts": [{"id": "p1", "text": "a red fox in snow", "theme": "wildlife", "tags": ["animal"]}],
            "criteria": [{"key": "overall", "label": "Overall"}]}
    r = api.post("/api/v1/studies", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["prompts"] == 1 and [c["key"] for c in r.json()["criteria"]] == ["overall"]


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"models": BODY["models"][:1]}, 400, "at least two models"),
        ({"themes": ["no such theme"]}, 400, "Unknown theme"),
        ({"prompts": [{"id": "x", "text": "t", "theme": "a"}]}, 400, "either prompts or themes"),
        ({"prompts": [{"id": "bad id", "text": "t", "theme": "a"}], "themes": None}, 400, "may only use"),
        ({"settings": {"width": 513}}, 400, "multiple of 8"),
        ({"votes_per_pair": 0}, 422, "greater than or equal to 1"),
    ],
)
def test_bad_study_is_refused_with_a_message(api, session, change, status, message):
    r = api.post("/api/v1/studies", json={**BODY, **change})
    assert r.status_code == status
    assert message in str(r.json()["detail"])
    assert session.scalars(select(Study)).all() == []
    session.rollback()


def test_open_close_and_progress(api, session):
    study = owned(session, status="draft", n_prompts=2, votes_per_pair=2)
    pairs = make_pairs(session, study)
    ev = make_evaluator(session, study)
    add_vote(session, pairs[0], ev, 1)
    study_id = study.id
    session.commit()
    r = api.post(f"/api/v1/studies/{study_id}/status", json={"status": "open"})
    assert r.status_code == 200 and r.json()["status"] == "open"
    assert api.post(f"/api/v1/studies/{study_id}/status", json={"status": "closed"}).json()["status"] == "closed"
    r = api.post(f"/api/v1/studies/{study_id}/status", json={"status": "draft"})
    assert r.status_code == 400 and "cannot be set to draft" in r.json()["detail"]
    assert api.post(f"/api/v1/studies/{study_id}/status", json={"status": "paused"}).status_code == 422
    p = api.get(f"/api/v1/studies/{study_id}/progress").json()
    assert (p["pairs"], p["votes"], p["votes_needed"], p["pairs_short"], p["evaluators"]) == (2, 1, 3, 2, 1)
    assert p["clips"]["done"] == 4 and p["status"] == "closed"


def test_unknown_study_is_404(api):
    for r in (api.get("/api/v1/studies/999"), api.get("/api/v1/studies/999/progress"),
              api.post("/api/v1/studies/999/status", json={"status": "open"})):
        assert r.status_code == 404 and "no study with id 999" in r.json()["detail"]


def test_admins_add_users(client, session):
    make_user(session, role="admin", email="boss@lab.org", password=PASSWORD)
    session.commit()
    client.post("/api/v1/login", json={"email": "boss@lab.org", "password": PASSWORD})
    r = client.post("/api/v1/users", json={"email": "New@lab.org", "password": "long enough", "role": "researcher"})
    assert r.status_code == 201 and r.json()["email"] == "new@lab.org"
    r = client.post("/api/v1/users", json={"email": "new@lab.org", "password": "long enough", "role": "admin"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = client.post("/api/v1/users", json={"email": "x@lab.org", "password": "short", "role": "admin"})
    assert r.status_code == 400 and "at least 8" in r.json()["detail"]
    assert [u["email"] for u in client.get("/api/v1/users").json()] == ["boss@lab.org", "new@lab.org"]
    client.post("/api/v1/logout")
    assert client.get("/api/v1/users").status_code == 401


def test_operations_are_in_the_openapi_schema(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for path in ("/api/v1/login", "/api/v1/studies", "/api/v1/studies/{study_id}",
                 "/api/v1/studies/{study_id}/status", "/api/v1/studies/{study_id}/progress", "/api/v1/users"):
        assert path in paths
    assert not any(p in paths for p in ("/login", "/studies/new", "/"))  # HTML pages stay out of the API docs


def test_ids_beyond_the_column_range_are_422_not_500(api):
    assert api.get(f"/api/v1/studies/{2**63}").status_code == 422
    assert api.get(f"/api/v1/studies/{2**31}/progress").status_code == 422
    assert api.get("/studies/0").status_code == 422


def test_every_study_operation_needs_a_login(client, session):
    study = make_study(session)
    study_id = study.id
    session.commit()
    calls = [("get", "/api/v1/me", None), ("get", "/api/v1/studies", None), ("post", "/api/v1/studies", BODY),
             ("get", f"/api/v1/studies/{study_id}", None), ("get", f"/api/v1/studies/{study_id}/progress", None),
             ("post", f"/api/v1/studies/{study_id}/status", {"status": "closed"}), ("get", "/api/v1/users", None),
             ("post", "/api/v1/users", {"email": "x@lab.org", "password": "long enough"})]
    for method, url, body in calls:
        r = client.request(method, url, json=body)
        assert r.status_code == 401, (method, url)
        assert "log in" in r.json()["detail"].lower()


def test_a_cross_site_form_cannot_change_a_study(api, session):
    # A form on another site can send text/plain but not application/json without a CORS preflight; the
    # API only reads JSON bodies, so such a post (even with the cookie) changes nothing.
    study = owned(session, status="open")
    study_id = study.id
    session.commit()
    r = api.post(f"/api/v1/studies/{study_id}/status", content=b'{"status": "closed"}',
                 headers={"Content-Type": "text/plain"})
    assert r.status_code == 422
    assert api.get(f"/api/v1/studies/{study_id}").json()["status"] == "open"


def test_qc_settings_are_changed_and_evaluators_rejudged(api, session):
    from app.models import Evaluator
    from tests.app.services.qc_votes import vote

    study = owned(session, n_prompts=4)
    pairs = make_pairs(session, study)
    ev = make_evaluator(session, study)
    for pair, side in zip(pairs, ("left", "right", "tie", "left"), strict=True):
        vote(session, pair=pair, evaluator=ev, sides=side, time_ms=5000)  # 5 s: fine under the default 3 s
    study_id, ev_id = study.id, ev.id
    session.commit()
    assert api.get(f"/api/v1/studies/{study_id}/qc").json()["min_seconds_per_vote"] == 3.0

    r = api.patch(f"/api/v1/studies/{study_id}/qc", json={"min_seconds_per_vote": 8, "max_too_fast_share": 0.5})
    assert r.status_code == 200, r.text
    assert r.json()["min_seconds_per_vote"] == 8.0 and r.json()["attention_rate"] == 0.1
    session.expire_all()
    flagged = session.get(Evaluator, ev_id)
    assert flagged.flagged and any("in under 8 s" in reason for reason in flagged.flag_reasons), flagged.flag_reasons
    session.rollback()  # end the read: on SQLite it holds the write lock the next request needs

    r = api.patch(f"/api/v1/studies/{study_id}/qc", json={"attention_rate": "lots", "colour": 1})
    assert r.status_code == 400
    assert "attention_rate must be a number" in r.json()["detail"] and "unknown QC setting" in r.json()["detail"]
    session.expire_all()
    assert session.get(Study, study_id).qc == {"min_seconds_per_vote": 8.0, "max_too_fast_share": 0.5}


def test_pair_selection_is_set_at_creation_and_changed_over_http(api, session):
    """Issue 13: a study chooses adaptive pair selection when created; a bad value is refused, nothing changed."""
    r = api.post("/api/v1/studies", json={**BODY, "pair_selection": "bandit"})
    assert r.status_code == 400
    assert "pair_selection must be one of least_voted, adaptive, arena_eq9" in r.json()["detail"]
    assert api.get("/api/v1/studies").json() == []

    default = api.post("/api/v1/studies", json=BODY).json()
    assert api.get(f"/api/v1/studies/{default['id']}/qc").json()["pair_selection"] == "least_voted"
    r = api.post("/api/v1/studies", json={**BODY, "name": "Adaptive", "pair_selection": "adaptive"})
    assert r.status_code == 201, r.text
    study_id = r.json()["id"]
    assert api.get(f"/api/v1/studies/{study_id}/qc").json()["pair_selection"] == "adaptive"

    r = api.patch(f"/api/v1/studies/{study_id}/qc", json={"pair_selection": ["adaptive"]})
    assert r.status_code == 400 and "pair_selection must be one of" in r.json()["detail"]
    assert api.get(f"/api/v1/studies/{study_id}/qc").json()["pair_selection"] == "adaptive"
    r = api.patch(f"/api/v1/studies/{study_id}/qc", json={"pair_selection": "least_voted"})
    assert r.status_code == 200 and r.json()["pair_selection"] == "least_voted"
    r = api.patch(f"/api/v1/studies/{study_id}/qc", json={"pair_selection": "arena_eq9"})
    assert r.status_code == 200 and r.json()["pair_selection"] == "arena_eq9"


def test_optional_answers_through_the_api(api, session):
    answers = {"both_bad": True, "reason_tags": ["blurry", "flicker"], "comment": "optional"}
    r = api.post("/api/v1/studies", json={**BODY, "answers": answers})
    assert r.status_code == 201, r.text
    assert r.json()["answers"] == {**answers, "tags_required": False}
    stored = session.get(Study, r.json()["id"]).answer_options
    session.rollback()
    assert stored == {**answers, "tags_required": False}
    plain = api.post("/api/v1/studies", json=BODY).json()
    assert plain["answers"] == {}


@pytest.mark.parametrize(
    ("answers", "status", "message"),
    [
        ({"tags_required": True}, 400, "tags_required needs reason_tags"),
        ({"reason_tags": ["a", "a"]}, 400, "must not repeat"),
        ({"comment": "always"}, 422, "'off', 'optional' or 'required'"),
        ({"both_bad": "yes"}, 422, "valid boolean"),
        ({"bothbad": True}, 422, "Extra inputs are not permitted"),
        ({"reason_tags": ["x" * 41]}, 422, "at most 40 characters"),
    ],
)
def test_bad_optional_answers_are_refused_in_words(api, session, answers, status, message):
    r = api.post("/api/v1/studies", json={**BODY, "answers": answers})
    assert r.status_code == status and message in r.text, r.text
    assert session.scalar(select(Study.id)) is None
