"""A study for every family's teacher/student pair: created with the family's native settings, listed by
`blindpair presets`, warned about on the study page when a model fits none of the connected GPUs, and generated
through the real task path with the offload mode in each clip's cost record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli.base import app as cli
from app.models import Clip, WorkerDevice
from app.services import generation as svc
from app.services.prompts import PromptSpec
from app.services.studies import ModelSpec, create_study
from tests.factories import NO_CHECKS, make_study
from tests.worker.conftest import make_tiny_study
from tests.worker.test_generation_web import user  # noqa: F401  (the logged-in researcher fixture)
from worker import tasks
from worker.presets import FAMILIES, teacher_student_pairs, validate_settings
from worker.tiny import TINY_SETTINGS, build_tiny_family

PROMPTS = [PromptSpec("nature-001", "a waterfall in a misty forest", "nature")]


def test_a_study_can_be_created_for_every_pair_with_the_teachers_native_settings(session):
    pairs = [(t, s) for t, students in teacher_student_pairs() for s in students]
    assert {t.family for t, _ in pairs} >= {"animatediff", "wan", "ltx", "hunyuanvideo", "cogvideox"}
    for teacher, student in pairs:
        study = create_study(session, name=f"{student.name} vs {teacher.name}", prompts=PROMPTS,
                             models=[ModelSpec("student", preset=student.name),
                                     ModelSpec("teacher", preset=teacher.name)])
        f = FAMILIES[teacher.family_info.key]
        assert (study.settings["frames"], study.settings["width"], study.settings["height"]) == (
            f.frames, f.width, f.height), teacher.name
        specs = svc.run_specs(study)  # what the worker will run: both models at the one shared setting
        assert {(s.frames, s.width, s.height, s.fps) for s in specs.values()} == {
            (f.frames, f.width, f.height, float(f.fps))}


def test_a_setting_the_family_cannot_make_is_refused_and_nothing_is_created(session):
    from app.models import Study
    from app.services.studies import StudyError

    with pytest.raises(StudyError) as err:
        create_study(session, name="bad", prompts=PROMPTS, settings={"frames": 80},
                     models=[ModelSpec("a", preset="wan2.1-t2v-14b-lightx2v-4step"),
                             ModelSpec("b", preset="wan2.1-t2v-14b")])
    assert "not 80; nearest: 77 or 81" in str(err.value)
    assert session.scalar(select(Study.id)) is None


def test_blindpair_presets_lists_every_familys_teacher_and_student_with_its_card():
    result = CliRunner().invoke(cli, ["presets"])
    assert result.exit_code == 0, result.output
    for teacher, students in teacher_student_pairs():
        assert f"teacher  {teacher.name}" in result.output
        for s in students:
            assert f"student  {s.name}" in result.output and s.card in result.output
    assert "Wan 2.1 / 2.2 (Wan-AI): native 81 frames at 832x480, 16 fps; frames 4k+1" in result.output
    assert "tiny-wan" not in result.output  # test presets only with --all
    assert "tiny-wan" in CliRunner().invoke(cli, ["presets", "--all"]).output


def _hunyuan_study(session, user_id):
    study = make_study(session, models=("fast", "slow"), n_prompts=1, qc=NO_CHECKS, created_by_id=user_id)
    study.models[0].preset, study.models[1].preset = "fasthunyuan-6step", "hunyuanvideo"
    study.settings = validate_settings(None, presets=["hunyuanvideo"])
    session.commit()
    return study


def _report(session, worker: str, gb: float | None, *, hours_ago: float = 0) -> None:
    session.add(WorkerDevice(worker=worker, device="cuda:0 (test GPU)" if gb else "cpu (x86_64)",
                             total_memory_bytes=int(gb * 1e9) if gb else None,
                             seen_at=datetime.now(UTC) - timedelta(hours=hours_ago)))
    session.commit()


def _panel_text(client, study_id) -> str:
    html = client.get(f"/studies/{study_id}").text
    return BeautifulSoup(html, "html.parser").find(id="generation").get_text(" ", strip=True)


def test_the_study_page_warns_before_generation_when_no_connected_gpu_holds_a_model(client, session, user):  # noqa: F811
    study = _hunyuan_study(session, user.id)
    assert "No GPU worker has reported in the last 24 hours" in _panel_text(client, study.id)
    _report(session, "w-small", 16.0)
    _report(session, "w-cpu", None)
    _report(session, "w-gone", 141.0, hours_ago=30)  # not connected any more
    text = _panel_text(client, study.id)
    assert "Model 'slow' (hunyuanvideo) cannot fit the connected workers' GPUs (largest 16 GB)" in text
    assert "Model 'fast' (fasthunyuan-6step) cannot fit" in text
    _report(session, "w-big", 141.0)
    text = _panel_text(client, study.id)
    assert "cannot fit" not in text and "Connected GPUs:" in text


def test_a_mixed_family_study_says_so_on_its_page(client, session, user):  # noqa: F811
    study = make_study(session, models=("wan", "ltx"), n_prompts=1, qc=NO_CHECKS, created_by_id=user.id)
    study.models[0].preset, study.models[1].preset = "wan2.1-t2v-14b", "ltx-video-0.9.7-distilled"
    study.settings = validate_settings(None, presets=["wan2.1-t2v-14b", "ltx-video-0.9.7-distilled"])
    session.commit()
    text = _panel_text(client, study.id)
    assert "This study mixes families" in text and "81 frames at 832x480, 16 fps" in text
    assert "161 frames at 768x512, 24 fps" in text


def test_the_task_path_records_the_offload_mode_and_the_workers_device(session, tmp_path):
    folder = build_tiny_family(tmp_path / "tiny", "wan")
    study = make_tiny_study(session, folder, presets=("tiny-wan-lora-2step", "tiny-wan"), n_prompts=1,
                            **TINY_SETTINGS["wan"])
    sent: list[int] = []
    svc.queue_batch(session, study_id=study.id, send=sent.extend)
    session.commit()
    tasks._device_reported.clear()
    assert [tasks.run_clip(clip_id) for clip_id in sent] == ["done", "done"]
    session.expire_all()
    clips = session.scalars(select(Clip).where(Clip.id.in_(sent))).all()
    for clip in clips:
        assert clip.generation["offload"] == "none" and clip.generation["memory"]["fits"]
        assert clip.frames == 5 and clip.unet_evals == clip.steps * clip.generation["cfg_passes"]
    costs = {c["name"]: c for c in svc.cost_summary(session, study_id=study.id)}
    assert all(c["offload"] == ["none"] for c in costs.values())
    device = session.scalars(select(WorkerDevice)).one()
    assert device.device.startswith("cpu") and device.total_memory_bytes is None


def test_over_http_a_wan_pair_gets_wans_settings_and_an_impossible_frame_count_is_refused(client, session):
    from app.models import Study
    from tests.app.api.test_studies_api import PASSWORD as API_PASSWORD
    from tests.factories import make_user

    make_user(session, role="researcher", email="api@lab.org", password=API_PASSWORD)
    session.commit()
    assert client.post("/api/v1/login", json={"email": "api@lab.org", "password": API_PASSWORD}).status_code == 200
    body = {"name": "Lightning Wan", "themes": ["wildlife"],
            "models": [{"name": "fast", "preset": "wan2.2-t2v-a14b-lightning-4step"},
                       {"name": "teacher", "preset": "wan2.2-t2v-a14b",
                        "overrides": {"guidance_2": 2.5, "off_card": True}}]}
    r = client.post("/api/v1/studies", json={**body, "settings": {"frames": 80, "width": 840}})
    assert r.status_code == 400
    assert "not 80; nearest: 77 or 81" in str(r.json()["detail"]) and "nearest: 832 or 848" in str(r.json()["detail"])
    assert session.scalars(select(Study)).all() == []
    session.rollback()
    r = client.post("/api/v1/studies", json=body)
    assert r.status_code == 201, r.text
    settings = r.json()["settings"]
    assert (settings["frames"], settings["width"], settings["height"], settings["fps"], settings["dtype"]) == (
        81, 832, 480, 16, "bfloat16")


def test_study_create_on_the_command_line_says_what_every_model_makes_and_that_families_are_mixed():
    from app import db
    from app.migrate import upgrade

    upgrade()
    try:
        r = CliRunner().invoke(cli, ["study", "create", "--name", "Mixed", "--theme", "nature",
                                     "--model", "wan:wan2.1-t2v-14b-lightx2v-4step",
                                     "--model", "ltx:ltx-video-0.9.7-dev"])
        assert r.exit_code == 0, r.output
        # The teacher (LTX-Video) sets the shared settings; Wan can make 161 frames (4k+1) at 768x512 (16s) too.
        assert "Every model makes 161 frames at 768x512, 24 fps, bfloat16." in r.output
        assert "This study mixes families" in r.output and "81 frames at 832x480, 16 fps" in r.output
        r = CliRunner().invoke(cli, ["study", "create", "--name", "Pair", "--theme", "nature",
                                     "--model", "fast:fasthunyuan-6step", "--model", "teacher:hunyuanvideo"])
        assert "Every model makes 129 frames at 1280x720, 24 fps, bfloat16." in r.output
        assert "mixes families" not in r.output
    finally:
        db.reset_engine_cache()
