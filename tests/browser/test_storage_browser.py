"""Across "machines" in a real Chromium: two ``blindpair worker`` processes with media folders of their own and a
web server with a third, sharing only the database, the broker and a bucket of a real SeaweedFS; the workers
generate a demo study and an evaluator rates it. Marked ``s3``, ``browser`` and ``slow``."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.models import Clip, Vote
from app.services import generation as gen
from app.services import storage as svc
from tests.browser.conftest import start_server, stop_server
from tests.storage.test_across_machines import all_done, demo_study, no_local_gifs, start_workers, wait
from tests.worker.test_celery_worker import migrated_session  # noqa: F401 - a fixture

pytestmark = [pytest.mark.s3, pytest.mark.browser, pytest.mark.slow]


def test_two_workers_and_a_web_server_share_only_a_bucket(migrated_session, s3_env, tmp_path, page,  # noqa: F811
                                                          monkeypatch):
    session = migrated_session
    study = demo_study(session, n_prompts=3)
    invite, keys = study.invite_token, [c.key for c in study.criteria]
    gen.queue_batch(session, study_id=study.id)
    session.commit()
    workers, folders = start_workers(tmp_path, ["gpu-a", "gpu-b"])
    try:
        wait(all_done(session, study.id), workers, 240, "the demo batch")
    finally:
        for w in workers:
            w.stop()
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id)).all()
    assert {c.storage for c in clips} == {"s3"} and no_local_gifs(folders)
    session.rollback()

    # The web server has a media folder of its own, empty: it can only read the bucket.
    monkeypatch.setenv("BLINDPAIR_MEDIA_DIR", str(tmp_path / "media-web"))
    proc, base = start_server(tmp_path / "web.log")
    try:
        page.goto(f"{base}/join/{invite}?PROLIFIC_PID=s3-rater")
        page.get_by_label("I have read the above and agree to take part.").check()
        page.get_by_role("button", name="Start").click()
        for n in range(1, 4):
            expect(page.get_by_text(f"Pair {n} of 3")).to_be_visible()
            for side in ("left", "right"):  # both clips decoded by the browser, from the bucket via the server
                expect(page.locator(f"#clip-{side}")).to_have_js_property("complete", True)
                assert page.locator(f"#clip-{side}").evaluate("img => img.naturalWidth") > 0
            expect(page.locator("#submit-vote")).to_be_enabled(timeout=15_000)
            for key in keys:
                page.locator(f"#q-{key}").get_by_label("Left is better").check()
            page.locator("#submit-vote").click()
        expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
        assert page.errors == [] and [b for b in page.bad_responses if b[1] != "/favicon.ico"] == []
    finally:
        stop_server(proc)
    assert session.query(Vote).count() == 3
    assert not (tmp_path / "media-web").exists() or not any((tmp_path / "media-web").glob("*.gif"))
    assert svc.check_storage(session, study_id=study.id).ok
