"""The metrics on the pages: the dashboard section, the study-page panel and its button, the CSV download."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup

from app.services import metrics as svc
from app.services import task_queue
from app.services.results_cache import get_cache
from tests.app.services.results_factory import voted_study
from tests.app.web.test_results import _as
from tests.support.web import csrf_of

pytestmark = pytest.mark.usefixtures("fresh_results_cache")


@pytest.fixture
def study(session):
    study = voted_study(session, n_prompts=4, n_evaluators=3)
    session.commit()
    return study


def test_the_dashboard_asks_for_metrics_until_there_are_some_then_shows_them(client, session, study):
    _as(client, session, "admin")
    page = BeautifulSoup(client.get(f"/studies/{study.id}/results").text, "html.parser")
    section = page.find("section", id="metrics")
    assert section is not None and "No clip has been measured yet" in section.text
    svc.compute_study(study.id)
    get_cache().clear()
    page = BeautifulSoup(client.get(f"/studies/{study.id}/results").text, "html.parser")
    section = page.find("section", id="metrics")
    assert "8 of 8 clips measured" in section.text
    captions = [c.text for c in section.find_all("caption")]
    assert any("Agreement between the votes and the metrics" in c for c in captions)
    assert any("motion-adjusted preference" in c for c in captions)
    assert any("Held-out accuracy" in c for c in captions)
    assert section.find("svg", id="metric-agree") is not None and section.find("svg", id="metric-adjusted")
    assert page.find("a", href=f"/studies/{study.id}/export/metrics.csv") is not None
    api = client.get(f"/api/v1/studies/{study.id}/results").json()
    assert api["metrics"]["clips_measured"] == 8


def test_only_admins_download_the_metrics_table(client, session, study):
    svc.compute_study(study.id)
    _as(client, session, "researcher")
    assert client.get(f"/studies/{study.id}/export/metrics.csv").status_code == 403
    client.cookies.clear()
    _as(client, session, "admin")
    r = client.get(f"/studies/{study.id}/export/metrics.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0].startswith('"clip_id"') and "motion_mean" in r.text.splitlines()[0]
    assert client.get(f"/studies/{study.id}/export/metrics.xlsx").status_code == 404


class RecordingQueue:
    def __init__(self):
        self.sent = []

    def send_generate(self, clip_ids):  # pragma: no cover - not used here
        raise AssertionError

    def send_metrics(self, clip_ids, *, force=False):
        self.sent.append((list(clip_ids), force))

    def problem(self):
        return None


def test_the_study_page_counts_measured_clips_and_its_button_queues_the_rest(client, session, study):
    queue = RecordingQueue()
    task_queue.register(queue)
    try:
        _as(client, session, "admin")
        page = client.get(f"/studies/{study.id}")
        panel = BeautifulSoup(page.text, "html.parser").find("section", id="metrics")
        assert "0 of 8 clips measured" in panel.text and "Compute for 8 clip(s)" in panel.text
        r = client.post(f"/studies/{study.id}/metrics/compute", data={"csrf_token": csrf_of(page.text)},
                        follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].endswith("#metrics")
        assert len(queue.sent) == 1 and len(queue.sent[0][0]) == 8 and queue.sent[0][1] is False
        flash = client.get(f"/studies/{study.id}").text
        assert "8 clip(s) queued for metrics" in flash
        r = client.post(f"/studies/{study.id}/metrics/compute", data={"csrf_token": "wrong"},
                        follow_redirects=False)
        assert r.status_code in (400, 403) and len(queue.sent) == 1
    finally:
        task_queue.register(None)
