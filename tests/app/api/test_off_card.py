"""Settings that leave a preset's model card are visible (issue 21): refused unless the study marks the model as an
off-card variant, then shown on the study page and in the report. The negative prompt is checked like a prompt."""

from __future__ import annotations

from bs4 import BeautifulSoup
from sqlalchemy import select

from app.models import Study
from tests.app.api.test_studies_api import BODY, api  # noqa: F401  # the logged-in API client fixture

LIGHTNING_25 = {"name": "lightning", "preset": "animatediff-lightning-4step", "overrides": {"steps": 25}}


def test_an_override_that_leaves_the_card_is_refused_with_what_to_do(api, session):  # noqa: F811
    for overrides, words in (({"steps": 25}, "steps 25 (card: 4)"), ({"guidance": 7.5}, "guidance 7.5 (card: 1.0)")):
        body = {**BODY, "models": [{**LIGHTNING_25, "overrides": overrides}, BODY["models"][1]]}
        r = api.post("/api/v1/studies", json=body)
        assert r.status_code == 400
        detail = str(r.json()["detail"])
        assert words in detail and "leaves the card of preset 'animatediff-lightning-4step'" in detail
        assert '"off_card": true' in detail  # the way out, in the message
        assert session.scalars(select(Study)).all() == []  # nothing changed
        session.rollback()


def test_a_marked_off_card_variant_is_accepted_and_shown_on_the_study_page_and_in_the_report(api, session):  # noqa: F811
    body = {**BODY, "models": [{**LIGHTNING_25, "overrides": {"steps": 25, "off_card": True}}, BODY["models"][1]]}
    r = api.post("/api/v1/studies", json=body)
    assert r.status_code == 201, r.text
    study_id = r.json()["id"]
    page = BeautifulSoup(api.get(f"/studies/{study_id}").text, "html.parser")
    row = next(tr for tr in page.select("tr") if "lightning" in tr.get_text() and "steps=25" in tr.get_text())
    assert "off-card variant" in row.get_text()
    dashboard = BeautifulSoup(api.get(f"/studies/{study_id}/results").text, "html.parser").select_one("#off-card")
    assert dashboard is not None and "steps 25 (card: 4)" in dashboard.get_text()
    # The downloadable report (an admin's export) renders the same section.
    from app.services.exports import report_html

    section = BeautifulSoup(report_html(session, study=session.get(Study, study_id)), "html.parser")
    assert "steps 25 (card: 4)" in section.select_one("#off-card").get_text()


def test_a_negative_prompt_over_77_clip_tokens_is_refused_like_a_prompt(api, session):  # noqa: F811
    body = {**BODY, "settings": {"negative_prompt": "blurry, " * 60}}
    r = api.post("/api/v1/studies", json=body)
    assert r.status_code == 400
    assert "negative_prompt is" in str(r.json()["detail"]) and "CLIP tokens" in str(r.json()["detail"])
    assert session.scalars(select(Study)).all() == []
