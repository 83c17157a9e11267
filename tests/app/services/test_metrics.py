"""Storing, refreshing and exporting per-clip metrics; the metrics block of the results, the dashboard and exports."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.media.storage import store_bytes
from app.metrics import WEIGHT_FREE
from app.metrics.registry import Measurement, MetricValue
from app.models import Clip, ClipMetric
from app.services import metrics as svc
from app.services import task_queue
from app.services.metric_results import metric_results
from app.services.results_cache import get_results
from tests.app.metrics.synthetic import gif, moving_square
from tests.app.services.results_factory import voted_study
from tests.factories import make_pairs, make_study

NAMES = {m.name for m in WEIGHT_FREE}


pytestmark = pytest.mark.usefixtures("fresh_results_cache")


@pytest.fixture
def study(session):
    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    session.commit()
    return study


def _rows(session, clip_id=None) -> list[ClipMetric]:
    query = select(ClipMetric)
    if clip_id is not None:
        query = query.where(ClipMetric.clip_id == clip_id)
    return list(session.scalars(query))


def test_every_clip_gets_every_weight_free_metric_with_its_version_and_file(session, study):
    clips = list(session.scalars(select(Clip).where(Clip.study_id == study.id)))
    assert len(svc.needing(session, study_id=study.id)) == len(clips) == 4
    session.commit()
    seen = []
    summary = svc.compute_study(study.id, progress=lambda done, total: seen.append((done, total)))
    assert summary.measured == 4 and not summary.failed
    assert seen[-1] == (4, 4)
    session.expire_all()
    for clip in clips:
        rows = {r.name: r for r in _rows(session, clip.id)}
        assert set(rows) == NAMES - set(summary.not_computed)
        for r in rows.values():
            assert r.sha256 == clip.sha256 and r.per_frame and r.computed_at is not None
    progress = svc.metrics_progress(session, study_id=study.id)
    assert (progress.clips, progress.measured, progress.missing, progress.with_clip) == (4, 4, 0, 0)
    assert svc.needing(session, study_id=study.id) == []


def test_current_metrics_are_not_computed_again_unless_forced(session, study):
    session.commit()
    svc.compute_study(study.id)
    n = session.scalar(select(func.count(ClipMetric.id)))
    session.commit()  # SQLite: the test's read must not hold the write lock the service needs
    again = svc.compute_study(study.id)
    assert again.measured == 0 and again.skipped_current == 0  # nothing needed: no clip was even listed
    forced = svc.compute_study(study.id, force=True)
    assert forced.measured == 4
    assert session.scalar(select(func.count(ClipMetric.id))) == n  # replaced, not duplicated


def test_a_replaced_file_makes_its_metrics_stale(session, study):
    session.commit()
    svc.compute_study(study.id)
    clip = session.scalars(select(Clip).where(Clip.study_id == study.id)).first()
    stored = store_bytes(gif(moving_square(3, frames=4, size=32, square=12)))
    clip.storage_name, clip.sha256 = stored.storage_name, stored.sha256
    session.commit()
    assert [t.clip_id for t in svc.needing(session, study_id=study.id)] == [clip.id]
    session.commit()
    assert svc.compute_study(study.id).measured == 1
    assert {r.sha256 for r in _rows(session, clip.id)} == {stored.sha256}


def test_an_old_version_is_not_current(session, study):
    clip = session.scalars(select(Clip).where(Clip.study_id == study.id)).first()
    svc.store(session, clip_id=clip.id, sha256=clip.sha256,
              values={"flicker": MetricValue(value=0.1, version="vbench-mae/0")})
    session.commit()
    assert "flicker" not in svc.current_names(session, clip_ids=[clip.id])[clip.id]


def test_an_unreadable_file_is_reported_and_the_others_measured(session, study):
    clip = session.scalars(select(Clip).where(Clip.study_id == study.id)).first()
    from app.media.storage import media_path

    media_path(clip.storage_name).write_bytes(b"broken")
    session.commit()
    summary = svc.compute_study(study.id)
    assert summary.measured == 3 and set(summary.failed) == {clip.id}
    assert "could not read" in summary.failed[clip.id]


def test_extra_metrics_from_weights_are_stored_beside(session, study):
    session.commit()

    def fake_clip(frames, prompt):
        assert prompt.startswith("a test prompt")
        return Measurement(values={"clip_score": MetricValue(value=0.25, version="clip/1:tiny", per_frame=[0.25])})

    svc.compute_study(study.id, extra=fake_clip)
    progress = svc.metrics_progress(session, study_id=study.id)
    assert progress.with_clip == 4
    table = svc.metrics_table(session, study_id=study.id)
    assert list(table["clip_score"]) == [0.25] * 4
    assert table["metric_versions"].str.contains("clip_score=clip/1:tiny").all()
    assert {"clip_id", "model", "prompt", "theme", "seed", "gpu_seconds", *NAMES} <= set(table.columns)


class FakeQueue:
    def __init__(self):
        self.sent: list[tuple[list[int], bool]] = []

    def send_generate(self, clip_ids):  # pragma: no cover - not used here
        raise AssertionError

    def send_metrics(self, clip_ids, *, force=False):
        self.sent.append((list(clip_ids), force))

    def problem(self):
        return None


def test_queueing_sends_the_clips_that_need_metrics(session, study):
    queue = FakeQueue()
    task_queue.register(queue)
    try:
        assert svc.queue_study(session, study_id=study.id) == 4
        session.commit()
        svc.compute_study(study.id)
        # Weight-free metrics are there, CLIP is not: the workers are asked for CLIP.
        assert svc.queue_study(session, study_id=study.id) == 4
        assert svc.queue_study(session, study_id=study.id, force=True) == 4
        assert [f for _, f in queue.sent] == [False, False, True]
    finally:
        task_queue.register(None)


def test_a_queue_that_cannot_compute_metrics_is_refused_in_words(session, study):
    class OldQueue:
        def send_generate(self, clip_ids):  # pragma: no cover
            raise AssertionError

        def problem(self):
            return None

    task_queue.register(OldQueue())
    try:
        with pytest.raises(svc.MetricsError, match="blindpair metrics compute"):
            svc.queue_study(session, study_id=study.id)
    finally:
        task_queue.register(None)


@pytest.mark.slow
def test_results_json_and_the_report_carry_the_metrics(session):
    from app.services import exports

    study = voted_study(session, n_prompts=4, n_evaluators=4)
    session.commit()
    svc.compute_study(study.id)
    cached = get_results(session, study_id=study.id)
    block = metric_results(session, study_id=study.id, cached=cached)
    assert block is metric_results(session, study_id=study.id, cached=cached)  # memoised until a metric changes
    assert block["clips_measured"] == 8 and block["models"] == ["lightning", "animatediff"]
    assert {r["criterion"] for r in block["adjusted"]} >= {"motion_amplitude", "overall"}
    assert {(r["criterion"], r["metric"]) for r in block["agreement"]} >= {("motion_amplitude", "motion_mean")}
    payload = json.loads(exports.results_json(session, study=study).body)
    assert payload["metrics"]["clips_measured"] == 8
    report = exports.report_html(session, study=study)
    assert 'id="metrics"' in report and "Automatic metrics beside the votes" in report
    download = exports.clip_metrics(session, study=study, fmt="csv")
    lines = download.body.decode().splitlines()
    assert lines[0].startswith('"clip_id","model","prompt"') and len(lines) == 9
    with pytest.raises(exports.ExportError):
        exports.clip_metrics(session, study=study, fmt="xlsx")


def test_the_metrics_block_changes_when_a_metric_does(session):
    study = voted_study(session, n_prompts=3, n_evaluators=3)
    session.commit()
    cached = get_results(session, study_id=study.id)
    before = metric_results(session, study_id=study.id, cached=cached)
    assert before["clips_measured"] == 0 and before["agreement"] == []
    session.commit()
    svc.compute_study(study.id)
    after = metric_results(session, study_id=study.id, cached=cached)
    assert after["clips_measured"] == 6
