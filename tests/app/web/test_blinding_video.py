"""Blinding for MP4/WebM studies: the evaluator walk of test_blinding.py over a video study whose uploads carry
the model's name in their container metadata, and one size and layout for every clip of a prompt (attention
check copies included)."""

from __future__ import annotations

import io

import av
import pytest
from sqlalchemy import select

from app.media import video
from app.models import Clip
from app.services.attention import ensure_attention_pairs
from app.services.clips import import_gif_folder
from tests.app.web.test_blinding import walk_and_find_leaks
from tests.factories import make_study, video_frames

SECRET_MODELS = ("zz-lightning-secret", "zz-animatediff-secret")
ALLOWED_METADATA = {
    "mp4": ({"major_brand", "minor_version", "compatible_brands"}, {"language", "handler_name"}),
    "webm": ({"encoder"}, {"DURATION"}),
}


def _tagged(fmt: str, model: str, colour) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:  # not bitexact: encoder version and creation time go in
        out.metadata["title"] = f"generator={model}"
        out.metadata["comment"] = f"{model} 4step"
        out.metadata["creation_time"] = "2026-12-01T10:00:00Z"
        stream = out.add_stream("libx264" if fmt == "mp4" else "libvpx-vp9", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.metadata["handler_name"] = f"{model}-handler"
        for f in video_frames(12, colour=colour):
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return buf.getvalue()


@pytest.fixture(params=["mp4", "webm"])
def video_study(request, session, tmp_path):
    fmt = request.param
    study = make_study(session, models=SECRET_MODELS, n_prompts=3, pairs_per_session=3, votes_per_pair=2,
                       qc={"attention_rate": 0.5})
    study.settings = {**study.settings, "clip_format": fmt}
    session.flush()
    folder = tmp_path / "clips"
    for model, colour in zip(SECRET_MODELS, ((250, 30, 30), (30, 30, 250)), strict=True):
        (folder / model).mkdir(parents=True)
        for prompt in study.prompts:
            (folder / model / f"{prompt.external_id}.{fmt}").write_bytes(_tagged(fmt, model, colour))
    import_gif_folder(session, study_id=study.id, folder=folder)
    ensure_attention_pairs(session, study_id=study.id, n_sources=2)
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id)).all()
    assert any(c.origin == "degraded" for c in clips)
    secrets = set(SECRET_MODELS) | {"lightning", "animatediff", "4step", "generator="}
    for c in clips:
        secrets |= {c.storage_name, c.storage_name.rsplit(".", 1)[0], c.sha256, c.sha256[:16]}
    tokens = [c.media_token for c in clips]
    assert study.invite_token and len(study.criteria) == 6  # loaded now: the walk reads them after the commit
    session.expire_on_commit = False  # so reading them later opens no transaction that would hold SQLite's lock
    session.commit()
    return fmt, study, secrets, tokens


def test_nothing_an_evaluator_can_reach_in_a_video_study_names_a_model(client, video_study):
    fmt, study, secrets, tokens = video_study
    served: list[bytes] = []

    def check_body(url: str, body: bytes) -> None:
        if video.sniff(body) not in video.FORMATS:
            return
        served.append(body)
        with av.open(io.BytesIO(body)) as c:
            container_keys, stream_keys = ALLOWED_METADATA[fmt]
            assert set(c.metadata) <= container_keys, (url, dict(c.metadata))
            assert set(c.streams.video[0].metadata) <= stream_keys, (url, dict(c.streams.video[0].metadata))
            assert c.metadata.get("encoder", "Lavf") == "Lavf"  # no version
        assert b"x264 - core" not in body and b"2026-12-01" not in body

    leaks = walk_and_find_leaks(client, study, secrets, tokens, check_body=check_body)
    assert leaks == [], f"model-identifying strings reached the evaluator: {leaks[:10]}"
    assert len(served) >= 4


def test_every_video_of_a_prompt_is_served_at_one_size_and_one_sample_table(client, session, video_study):
    fmt, study, _secrets, _tokens = video_study
    by_prompt: dict[int, list[bytes]] = {}
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id)):
        r = client.get(f"/m/{clip.media_token}")
        assert r.status_code == 200 and r.headers["content-type"] == video.MIME[fmt]
        assert r.headers["accept-ranges"] == "bytes"
        by_prompt.setdefault(clip.prompt_id, []).append(r.content)
    assert any(len(bodies) > 2 for bodies in by_prompt.values())  # a prompt with its check copies
    for bodies in by_prompt.values():
        assert len({len(b) for b in bodies}) == 1
        assert len({video.sample_sizes(b) for b in bodies}) == 1
        assert len(set(bodies)) == len(bodies)  # and no two the same bytes (a check copy is not its clip's file)


def test_ranges_serve_the_same_bytes_in_parts(client, session, video_study):
    _fmt, study, _secrets, _tokens = video_study
    clip = session.scalars(select(Clip).where(Clip.study_id == study.id)).first()
    whole = client.get(f"/m/{clip.media_token}").content
    part = client.get(f"/m/{clip.media_token}", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == whole[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(whole)}"
    tail = client.get(f"/m/{clip.media_token}", headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == whole[-5:]
    bad = client.get(f"/m/{clip.media_token}", headers={"Range": f"bytes={len(whole) + 5}-"})
    assert bad.status_code == 416


def test_the_json_api_says_the_format_and_rate_the_same_for_both_sides(client, video_study):
    fmt, study, _secrets, _tokens = video_study
    joined = client.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token})
    headers = {"X-Evaluator-Token": joined.json()["evaluator_token"]}
    pair = client.get("/api/v1/evaluate/pair", headers=headers).json()["pair"]
    assert pair["media_type"] == video.MIME[fmt] and pair["fps"] == 8
    assert client.get(pair["left_media_url"]).headers["content-type"] == video.MIME[fmt]
