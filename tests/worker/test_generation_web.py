"""The study page's generation panel and the generation API, through the real app."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import func, select

from app import config
from app.models import Clip
from tests.app.web.test_auth import PASSWORD
from tests.factories import NO_CHECKS, make_study, make_user
from tests.support.servers import free_port
from tests.support.web import csrf_of, login_form


@pytest.fixture
def user(session, client):
    user = make_user(session, role="researcher", email="r@lab.org", password=PASSWORD)
    session.commit()
    assert login_form(client, "r@lab.org", PASSWORD).status_code == 303
    return user


@pytest.fixture
def study(session, user):
    study = make_study(session, models=("fast", "slow"), n_prompts=4, qc=NO_CHECKS, created_by_id=user.id)
    study.models[0].preset, study.models[1].preset = "animatediff-lightning-4step", "animatediff"
    session.commit()
    return study


def clip_count(session) -> int:
    n = session.scalar(select(func.count(Clip.id)))
    session.commit()  # SQLite BEGIN IMMEDIATE: end the transaction (commit does not expire the test objects)
    return n


def panel(client, study_id):
    html = client.get(f"/studies/{study_id}").text
    return BeautifulSoup(html, "html.parser").find(id="generation"), html


def test_the_panel_shows_what_each_model_runs_with_and_queues_a_theme(client, session, user, study):
    section, html = panel(client, study.id)
    text = section.get_text(" ", strip=True)
    assert "4 steps, guidance 1.0, EulerDiscreteScheduler" in text and "timestep_spacing=trailing" in text
    assert "25 steps, guidance 7.5, DDIMScheduler" in text and "steps_offset=1" in text
    assert "No generated clips yet" in text

    resp = client.post(f"/studies/{study.id}/generation/queue",
                       data={"theme": "nature", "csrf_token": csrf_of(html)}, follow_redirects=True)
    assert "4 new clip(s) queued" in resp.text  # 2 nature prompts x 2 models, on the embedded broker
    assert clip_count(session) == 4
    rows = {r.find("td").get_text(" ", strip=True).split(" ")[0]: [td.get_text(strip=True) for td in r.find_all("td")]
            for r in panel(client, study.id)[0].select("table.gen-progress tbody tr")}
    assert rows["fast"][2:6] == ["2", "0", "0", "0"]
    assert "no worker is generating right now" in panel(client, study.id)[0].get_text(" ", strip=True)


def test_queue_without_csrf_is_refused_and_changes_nothing(client, session, user, study):
    resp = client.post(f"/studies/{study.id}/generation/queue", data={"theme": ""})
    assert resp.status_code == 403 and clip_count(session) == 0


def test_broker_down_is_a_message_not_a_traceback(client, session, user, study, monkeypatch):
    html = client.get(f"/studies/{study.id}").text
    monkeypatch.setenv("BLINDPAIR_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    config.get_settings.cache_clear()
    resp = client.post(f"/studies/{study.id}/generation/queue", data={"csrf_token": csrf_of(html)},
                       follow_redirects=True)
    assert resp.status_code == 200 and "Not queued" in resp.text and "cannot be reached" in resp.text
    assert clip_count(session) == 0
    api = client.post(f"/api/v1/studies/{study.id}/generation/queue", json={})
    assert api.status_code == 503 and "cannot be reached" in api.json()["detail"]


def test_failed_clips_are_listed_with_their_error_and_retried(client, session, user, study):
    html = client.get(f"/studies/{study.id}").text
    client.post(f"/studies/{study.id}/generation/queue", data={"csrf_token": csrf_of(html)})
    clip = session.scalars(select(Clip).order_by(Clip.id)).first()
    clip.status, clip.error = "failed", "weights missing: run `hf download ByteDance/AnimateDiff-Lightning x`"
    session.commit()
    section, html = panel(client, study.id)
    assert "weights missing" in section.get_text() and "Retry all 1 failed clip(s)" in section.get_text()
    resp = client.post(f"/studies/{study.id}/generation/retry", data={"csrf_token": csrf_of(html),
                                                                       "clip_id": str(clip.id)},
                       follow_redirects=True)
    assert "1 failed clip(s) queued again" in resp.text
    session.expire_all()
    assert session.get(Clip, clip.id).status == "queued"
    session.rollback()


@pytest.mark.parametrize("clip_id", ["0", "-3", str(2**70)])
def test_a_bad_clip_id_to_retry_is_a_4xx_and_retries_nothing(client, session, user, study, clip_id):
    # clip_id=0 was read as "no clip given" and requeued every failed clip; 2**70 overflowed the driver (500).
    html = client.get(f"/studies/{study.id}").text
    client.post(f"/studies/{study.id}/generation/queue", data={"csrf_token": csrf_of(html)})
    for clip in session.scalars(select(Clip)):
        clip.status = "failed"
    session.commit()
    resp = client.post(f"/studies/{study.id}/generation/retry", data={"csrf_token": csrf_of(html),
                                                                       "clip_id": clip_id})
    assert resp.status_code == 422 and "clip_id" in resp.text
    session.expire_all()
    assert {c.status for c in session.scalars(select(Clip))} == {"failed"}
    session.rollback()


def test_the_cost_table_shows_recorded_costs(client, session, user, study):
    html = client.get(f"/studies/{study.id}").text
    client.post(f"/studies/{study.id}/generation/queue", data={"csrf_token": csrf_of(html)})
    for clip in session.scalars(select(Clip)):
        fast = clip.model_id == study.models[0].id
        clip.status, clip.wall_seconds = "done", 2.0 if fast else 16.0
        clip.denoise_seconds, clip.decode_seconds, clip.encode_seconds = clip.wall_seconds - 0.5, 0.4, 0.1
        clip.unet_evals, clip.peak_memory_bytes, clip.steps = (4 if fast else 50), 8 * 2**30, 4 if fast else 25
        clip.device, clip.dtype = "NVIDIA H100 80GB HBM3", "float16"
    session.commit()
    rows = [[td.get_text(" ", strip=True) for td in r.find_all("td")]
            for r in panel(client, study.id)[0].select("table.gen-costs tbody tr")]
    # Model seconds leave the 0.1 s of GIF encoding out: 1.9 and 15.9 s; GPU-seconds and speedup use them.
    assert rows[0][:9] == ["fast", "4", "2.00", "2.00", "1.90", "4", "8.00 GiB", "7.6", "8.37×"]
    assert rows[1][:9] == ["slow", "4", "16.00", "16.00", "15.90", "50", "8.00 GiB", "63.6", "1.00×"]
    costs = client.get(f"/api/v1/studies/{study.id}/generation/costs").json()
    assert [round(c["speedup_vs_slowest"], 3) for c in costs] == [round(15.9 / 1.9, 3), 1.0]


def test_the_api_queues_reports_and_refuses(client, session, user, study):
    resp = client.post(f"/api/v1/studies/{study.id}/generation/queue", json={"prompt_ids": ["p000"], "seeds": [0, 1]})
    assert resp.status_code == 202 and resp.json()["created"] == 4
    again = client.post(f"/api/v1/studies/{study.id}/generation/queue", json={"prompt_ids": ["p000"], "seeds": [0, 1]})
    assert again.json()["created"] == 0 and again.json()["resent"] == 4 and clip_count(session) == 4
    progress = client.get(f"/api/v1/studies/{study.id}/generation").json()
    assert progress["totals"]["queued"] == 4 and progress["models"][1]["run"]["steps"] == 25
    bad = client.post(f"/api/v1/studies/{study.id}/generation/queue", json={"theme": "space"})
    assert bad.status_code == 400 and "no prompts with theme 'space'" in bad.json()["detail"]
    assert client.post("/api/v1/studies/999/generation/queue", json={}).status_code == 404
    assert client.post(f"/api/v1/studies/{study.id}/generation/retry", json={}).json() == {"requeued": 0}
    client.cookies.clear()
    assert client.get(f"/api/v1/studies/{study.id}/generation").status_code == 401


@pytest.mark.parametrize("body", [
    {"seeds": [2**64]}, {"seeds": [-1]}, {"seeds": []}, {"prompt_ids": [2**40]}, {"prompt_ids": [""]},
    {"colour": "red"},
])
def test_out_of_range_api_input_is_a_422_and_changes_nothing(client, session, user, study, body):
    assert client.post(f"/api/v1/studies/{study.id}/generation/queue", json=body).status_code == 422
    assert client.post(f"/api/v1/studies/{study.id}/generation/retry", json={"clip_ids": [2**40]}).status_code == 422
    assert clip_count(session) == 0


def test_odd_prompt_ids_are_unknown_not_a_crash(client, session, user, study):
    resp = client.post(f"/api/v1/studies/{study.id}/generation/queue", json={"prompt_ids": ["²", "p000"]})
    assert resp.status_code == 400 and "unknown prompt id(s) for this study: ²" in resp.json()["detail"]
