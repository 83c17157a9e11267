from datetime import UTC, datetime

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import func, select

from app.models import Prompt, Study, StudyModel, User
from app.services.prompts import load_builtin_suite
from app.web import panels
from tests.app.services.test_studies import add_vote
from tests.app.web.test_auth import PASSWORD
from tests.factories import make_evaluator, make_pairs, make_study, make_user
from tests.support.web import csrf_of, login_form


@pytest.fixture
def user(session, client):
    user = make_user(session, role="researcher", email="r@lab.org", password=PASSWORD)
    session.commit()
    assert login_form(client, "r@lab.org", PASSWORD).status_code == 303
    return user


# SQLite transactions here BEGIN IMMEDIATE (app/db.py): a read in the test's session holds the write lock
# until it ends, so every read helper ends its transaction before the next request.
def count(session, model) -> int:
    n = session.scalar(select(func.count()).select_from(model))
    session.rollback()
    return n


def status_of(session, study_id: int) -> str:
    status = session.scalar(select(Study.status).where(Study.id == study_id))
    session.rollback()
    return status


def new_study_post(client, data, files=None):
    token = csrf_of(client.get("/studies/new").text)
    base = {"csrf_token": token, "name": "Lightning vs AnimateDiff", "model_name": ["lightning", "animatediff"],
            "model_description": ["4 steps", "25 steps"], "model_preset": ["animatediff-lightning-4step", ""],
            "prompt_source": "builtin", "themes": ["nature", "sports"], "votes_per_pair": "3",
            "pairs_per_session": "8", "redirect_url": ""}
    return client.post("/studies/new", data={**base, **data}, files=files or {"prompt_file": ("", b"")},
                       follow_redirects=False)


def errors_shown(html: str) -> list[str]:
    return [li.get_text() for li in BeautifulSoup(html, "html.parser").select(".flash.error li")]


def test_create_study_from_the_builtin_suite(client, session, user):
    r = new_study_post(client, {})
    assert r.status_code == 303, errors_shown(r.text)
    study = session.scalars(select(Study)).one()
    assert r.headers["location"] == f"/studies/{study.id}"
    assert [(m.name, m.preset) for m in study.models] == [
        ("lightning", "animatediff-lightning-4step"), ("animatediff", "")]
    themes = {p.theme for p in session.scalars(select(Prompt))}
    expected = [p for p in load_builtin_suite() if p.theme in ("nature", "sports")]
    assert themes == {"nature", "sports"} and count(session, Prompt) == len(expected)
    assert (study.votes_per_pair, study.pairs_per_session, study.created_by_id) == (3, 8, user.id)
    invite = f"/join/{study.invite_token}"
    session.rollback()
    page = client.get(r.headers["location"])
    assert "created as a draft" in page.text and invite in page.text


def test_refused_form_shows_every_error_keeps_values_and_creates_nothing(client, session, user):
    r = new_study_post(client, {"model_name": ["lightning", ""], "model_preset": ["animatediff-lightning-4step", ""],
                                "model_description": ["", ""],
                                "themes": [], "votes_per_pair": "many", "name": "Keep <me>"})
    assert r.status_code == 400
    errors = errors_shown(r.text)
    assert any("at least two models" in e for e in errors)
    assert any("at least one theme" in e for e in errors)
    assert any("Votes per pair must be a whole number" in e for e in errors)
    soup = BeautifulSoup(r.text, "html.parser")
    assert soup.find("input", {"name": "name"})["value"] == "Keep <me>"
    assert soup.find("input", {"name": "votes_per_pair"})["value"] == "many"
    presets = [i["value"] for i in soup.find_all("input", {"name": "model_preset"}) if i["value"]]
    assert presets == ["animatediff-lightning-4step"]
    assert not [i for i in soup.find_all("input", {"name": "themes"}) if i.has_attr("checked")]
    assert count(session, Study) == count(session, StudyModel) == count(session, Prompt) == 0


def test_uploaded_prompt_file_with_errors_is_refused_with_line_numbers(client, session, user):
    bad = b"id,text,theme\nok-1,a red fox in snow,wildlife\nbad id,a cat,animals\n"
    r = new_study_post(client, {"prompt_source": "file"}, files={"prompt_file": ("mine.csv", bad, "text/csv")})
    assert r.status_code == 400
    errors = errors_shown(r.text)
    assert any(e.startswith("line 3:") for e in errors), errors
    assert 'value="file" checked' in r.text
    assert count(session, Study) == count(session, Prompt) == 0


def test_uploaded_prompt_file_is_used(client, session, user):
    good = b'{"id": "p1", "text": "a red fox in snow", "theme": "wildlife"}\n' \
           b'{"id": "p2", "text": "a lighthouse in a storm", "theme": "nature", "detail": "short"}\n'
    r = new_study_post(client, {"prompt_source": "file"}, files={"prompt_file": ("mine.jsonl", good)})
    assert r.status_code == 303, errors_shown(r.text)
    assert sorted(session.scalars(select(Prompt.external_id))) == ["p1", "p2"]
    session.rollback()


def test_open_and_close(client, session, user):
    study = make_study(session, status="draft", created_by_id=user.id)
    study_id = study.id
    session.commit()
    page = client.get(f"/studies/{study_id}")
    token = csrf_of(page.text)
    assert "Open study" in page.text
    r = client.post(f"/studies/{study_id}/status", data={"status": "open", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303
    assert status_of(session, study_id) == "open"
    page = client.get(f"/studies/{study_id}")
    assert "now open" in page.text and "Close study" in page.text
    client.post(f"/studies/{study_id}/status", data={"status": "closed", "csrf_token": token})
    assert status_of(session, study_id) == "closed"
    # A forged post (no token) changes nothing.
    assert client.post(f"/studies/{study_id}/status", data={"status": "open"}).status_code == 403
    assert status_of(session, study_id) == "closed"
    # A transition that is not allowed is explained, not applied.
    page = client.post(f"/studies/{study_id}/status", data={"status": "draft", "csrf_token": token})
    assert "cannot be set to draft" in page.text
    assert status_of(session, study_id) == "closed"


def test_study_page_shows_progress_models_settings_and_panels(client, session, user, monkeypatch):
    study = make_study(session, n_prompts=2, votes_per_pair=2, created_by_id=user.id)
    pairs = make_pairs(session, study)
    evaluators = [make_evaluator(session, study) for _ in range(3)]
    evaluators[0].completed_at = datetime.now(UTC)
    add_vote(session, pairs[0], evaluators[0], 1)
    add_vote(session, pairs[0], evaluators[1], 1)
    add_vote(session, pairs[1], evaluators[2], 1)
    session.commit()

    def marker_panel(session_, study_):
        return "admin/_flash.html", {"flash": {"kind": "ok", "text": f"panel for {study_.name}"}}

    monkeypatch.setattr(panels, "STUDY_PANELS", [marker_panel])
    soup = BeautifulSoup(client.get(f"/studies/{study.id}").text, "html.parser")

    def shown(key):
        return soup.select_one(f'[data-progress="{key}"]').get_text()

    assert (shown("pairs"), shown("votes"), shown("pairs_short"), shown("votes_needed")) == ("2", "3", "1", "1")
    assert (shown("evaluators"), shown("evaluators_completed"), shown("clips.done")) == ("3", "1", "4")
    assert soup.select_one("#invite-url")["value"] == f"http://127.0.0.1:8000/join/{study.invite_token}"
    assert soup.select_one("[data-progress-url]")["data-progress-url"] == f"/api/v1/studies/{study.id}/progress"
    text = soup.get_text()
    assert "lightning" in text and "animatediff" in text and "frames" in text
    assert "Video-text relevance" in text
    assert f"panel for {study.name}" in text
    # Scripts are files, never inline (the CSP forbids inline code).
    assert all(s.has_attr("src") for s in soup.find_all("script"))
    assert not [t for t in soup.find_all(True) if any(a.startswith("on") for a in t.attrs)]


def test_names_with_markup_render_as_text(client, session, user):
    study = make_study(session, created_by_id=user.id)
    study.name = "<script>alert(1)</script>"
    study_id = study.id
    session.commit()
    for url in ("/", f"/studies/{study_id}"):
        html = client.get(url).text
        assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_unknown_study_is_404(client, user):
    assert client.get("/studies/9999").status_code == 404


def test_admin_adds_users(client, session):
    make_user(session, role="admin", email="boss@lab.org", password=PASSWORD)
    session.commit()
    login_form(client, "boss@lab.org", PASSWORD)
    token = csrf_of(client.get("/admin/users").text)
    r = client.post("/admin/users", data={"email": "new@lab.org", "password": "long enough", "role": "researcher",
                                          "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    r = client.post("/admin/users", data={"email": "NEW@lab.org", "password": "long enough", "role": "admin",
                                          "csrf_token": token})
    assert r.status_code == 400 and "already exists" in r.text
    r = client.post("/admin/users", data={"email": "x@lab.org", "password": "short", "role": "admin",
                                          "csrf_token": token})
    assert r.status_code == 400 and "at least 8 characters" in r.text and 'value="x@lab.org"' in r.text
    assert sorted(session.scalars(select(User.email))) == ["boss@lab.org", "new@lab.org"]


def test_the_clip_format_is_chosen_on_the_form(client, session, user):
    r = new_study_post(client, {"clip_format": "avi"})
    assert r.status_code == 400
    assert any("clip_format must be one of gif, mp4, webm" in e for e in errors_shown(r.text))
    r = new_study_post(client, {"clip_format": "mp4"})
    assert r.status_code == 303, errors_shown(r.text)
    assert session.scalars(select(Study.settings)).one()["clip_format"] == "mp4"
    session.rollback()


def test_pair_selection_is_chosen_on_the_form(client, session, user):
    """Issue 13: adaptive pair selection from the new-study form; a forged value is refused, nothing created."""
    r = new_study_post(client, {"pair_selection": "greedy"})
    assert r.status_code == 400
    assert any("pair_selection must be one of least_voted, adaptive, arena_eq9" in e for e in errors_shown(r.text))
    assert count(session, Study) == 0
    r = new_study_post(client, {"pair_selection": "adaptive"})
    assert r.status_code == 303, errors_shown(r.text)
    assert session.scalars(select(Study.qc)).one() == {"pair_selection": "adaptive"}
    session.rollback()


def test_generation_settings_from_the_form(client, session, user):
    r = new_study_post(client, {"seeds": "0, 1, 7", "width": "256", "height": "500", "frames": "x"})
    assert r.status_code == 400
    errors = errors_shown(r.text)
    assert any("height must be a multiple of 8" in e for e in errors)
    assert any("Frames must be a whole number" in e for e in errors)
    soup = BeautifulSoup(r.text, "html.parser")
    assert soup.find("input", {"name": "seeds"})["value"] == "0, 1, 7"
    assert count(session, Study) == 0
    r = new_study_post(client, {"seeds": "0, 1, 7", "width": "256", "height": "384", "dtype": "bfloat16"})
    assert r.status_code == 303, errors_shown(r.text)
    settings = session.scalars(select(Study.settings)).one()
    session.rollback()
    assert settings == {"seeds": [0, 1, 7], "frames": 16, "width": 256, "height": 384, "fps": 8,
                        "negative_prompt": "", "base_model": "emilianJR/epiCRealism", "dtype": "bfloat16",
                        "clip_format": "gif"}


def test_optional_answers_from_the_form_reach_the_evaluator_and_stay_optional(client, session, user):
    r = new_study_post(client, {"both_bad": "yes", "reason_tags": "blurry, flicker ,", "comment": "optional"})
    assert r.status_code == 303, errors_shown(r.text)
    study = session.scalars(select(Study)).one()
    assert study.answer_options == {"both_bad": True, "reason_tags": ["blurry", "flicker"], "tags_required": False,
                                    "comment": "optional"}
    study.status, study.qc = "open", {"enabled": False}
    make_pairs(session, study)
    invite, keys = study.invite_token, [c.key for c in study.criteria]
    session.commit()
    client.cookies.clear()  # now as a new evaluator
    token = csrf_of(client.get(f"/join/{invite}").text)
    client.post(f"/join/{invite}", data={"csrf_token": token, "consent": "yes"})
    soup = BeautifulSoup(client.get("/e/pair").text, "html.parser")
    assert soup.find("input", attrs={"name": f"c_{keys[0]}", "value": "both_bad"}) is not None
    assert {i["value"] for i in soup.select("input[name=reason_tag]")} == {"blurry", "flicker"}
    assert soup.find("textarea", attrs={"name": "comment"}).get("required") is None
    assert all(i.get("required") is None for i in soup.select("input[name=reason_tag]"))
    # No tag, no comment: recorded all the same.
    data = {"csrf_token": soup.find("input", attrs={"name": "csrf_token"})["value"],
            "assignment": soup.find("input", attrs={"name": "assignment"})["value"],
            **{f"c_{k}": "left" for k in keys}}
    assert client.post("/e/vote", data=data, follow_redirects=False).status_code == 303


def test_a_form_without_optional_answers_offers_none(client, session, user):
    assert new_study_post(client, {}).status_code == 303
    assert session.scalars(select(Study)).one().answer_options is None


@pytest.mark.parametrize(("data", "message"), [
    ({"tags_required": "yes"}, "tags_required needs reason_tags"),
    ({"reason_tags": "blurry, blurry"}, "must not repeat"),
    ({"comment": "always"}, "comment must be one of"),
    ({"reason_tags": "x" * 41}, "at most 40 characters"),
])
def test_bad_optional_answers_are_refused_in_words_and_kept(client, session, user, data, message):
    r = new_study_post(client, data)
    assert r.status_code == 400
    assert any(message in e for e in errors_shown(r.text)), errors_shown(r.text)
    assert count(session, Study) == 0
    form = BeautifulSoup(r.text, "html.parser")
    if "reason_tags" in data:
        assert form.find("input", attrs={"name": "reason_tags"})["value"] == data["reason_tags"]
    if "tags_required" in data:
        assert form.find("input", attrs={"name": "tags_required"}).has_attr("checked")
