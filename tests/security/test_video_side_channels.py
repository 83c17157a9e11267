"""The served bytes of MP4/WebM clips tell no more than their pixels: an attacker's scripts over /m/<token>.

The uploads differ the way two models' files would: model X's clips are busier (so larger) and come from
another encoder setup, with the model's name in the container's title and its own encoder tag and creation
time. Each prompt's clips are served at one size with one sample table (every frame grown inside the codec
stream to the longest that frame is among them, app/media/video.py), so the attacker reads everything the
container and stream carry (size, every frame's size, the MP4 boxes and their sizes, the metadata) and tries
to tell the models apart. The same script on the uploads succeeds, which shows it can.
"""

from __future__ import annotations

import io
import random
import struct

import av
import numpy as np
import pytest
from sqlalchemy import select

from app.media import video
from app.models import Clip, Prompt, StudyModel
from app.services.clips import import_gif_folder
from tests.factories import NO_CHECKS, make_study
from tests.security.test_byte_side_channels import attack, chance_band

N_PAIRS = 120
SIZE = 32


def _upload(frames: list[np.ndarray], fmt: str, *, model: str, crf: str, preset: str) -> bytes:
    """A file as a lab's own export would write it: its encoder tag, creation time and the model's name."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        out.metadata["title"] = f"generator={model}"
        out.metadata["creation_time"] = "2026-12-01T10:00:00Z"
        codec = "libx264" if fmt == "mp4" else "libvpx-vp9"
        opts = {"crf": crf, "preset": preset} if fmt == "mp4" else {"crf": crf, "b": "0", "cpu-used": "8"}
        stream = out.add_stream(codec, rate=8, options=opts)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return buf.getvalue()


def _scene(rng: np.random.Generator, *, busy: bool) -> list[np.ndarray]:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    hue = rng.uniform(0, 255, 3)
    base = (hue[None, None, :] * 0.5 + np.stack([x, y, x + y], axis=-1) * 2).astype(np.float32)
    out = []
    for i in range(4):
        f = base.copy()
        f[8:20, i * 5:i * 5 + 12] = 240 - hue / 2
        if busy:
            f += rng.normal(0, 18, f.shape)
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


def _mp4_boxes(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[tuple[str, int]]:
    """Every box (path, size) of an MP4, nested; what a parser reads of the layout."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        name = kind.decode("latin-1")
        out.append((f"{depth}:{name}", size))
        if name in ("moov", "trak", "mdia", "minf", "stbl") and size > 8:
            out += _mp4_boxes(data, pos + 8, pos + size, depth + 1)
        pos += max(size, 8)
    return out


def features(data: bytes) -> dict[str, float]:
    """Everything the container and stream say apart from the pixels: sizes, layout, metadata."""
    out: dict[str, float] = {"size": float(len(data))}
    for i, n in enumerate(video.sample_sizes(data)):
        out[f"frame{i}"] = float(n)
    if video.sniff(data) == "mp4":
        for i, (path, size) in enumerate(_mp4_boxes(data)):
            out[f"box{i}:{path}"] = float(size)
    with av.open(io.BytesIO(data)) as c:
        meta = {**c.metadata, **{f"s:{k}": v for k, v in c.streams.video[0].metadata.items()}}
    out["metadata_keys"] = float(len(meta))
    out["metadata_bytes"] = float(sum(len(k) + len(v) for k, v in meta.items()))
    return out


def _vectors(pairs):
    feats = [(features(a), features(b)) for a, b in pairs]
    keys = sorted({k for fa, fb in feats for k in (*fa, *fb)})
    return (np.array([[fa.get(k, -1.0) for k in keys] for fa, _ in feats]),
            np.array([[fb.get(k, -1.0) for k in keys] for _, fb in feats]))


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_an_attackers_classifier_over_served_video_bytes_is_at_chance(client, session, tmp_path, fmt):
    study = make_study(session, models=("model-x", "model-y"), n_prompts=N_PAIRS, qc=NO_CHECKS)
    study.settings = {**study.settings, "clip_format": fmt}
    session.flush()
    rng = np.random.default_rng(2026)
    folder = tmp_path / "clips"
    raw = {}
    for prompt in study.prompts:
        for model, busy, crf, preset in (("model-x", True, "30", "ultrafast"), ("model-y", False, "18", "slow")):
            data = _upload(_scene(rng, busy=busy), fmt, model=model, crf=crf, preset=preset)
            raw[model, prompt.external_id] = data
            (folder / model).mkdir(parents=True, exist_ok=True)
            (folder / model / f"{prompt.external_id}.{fmt}").write_bytes(data)
    import_gif_folder(session, study_id=study.id, folder=folder)
    session.commit()

    models = {m.id: m.name for m in session.scalars(select(StudyModel))}
    prompts = {p.id: p.external_id for p in session.scalars(select(Prompt))}
    by_prompt: dict[int, dict[str, bytes]] = {}
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id)):
        r = client.get(f"/m/{clip.media_token}")
        assert r.status_code == 200 and r.headers["content-type"] == video.MIME[fmt]
        body = r.content
        assert b"generator=" not in body and b"x264 - core" not in body and b"2026-12-01" not in body
        by_prompt.setdefault(clip.prompt_id, {})[models[clip.model_id]] = body
    order = random.Random(7)
    served_pairs, raw_pairs, x_left = [], [], []
    for prompt_id, bodies in sorted(by_prompt.items()):
        sides = ["model-x", "model-y"]
        order.shuffle(sides)
        served_pairs.append((bodies[sides[0]], bodies[sides[1]]))
        raw_pairs.append((raw[sides[0], prompts[prompt_id]], raw[sides[1], prompts[prompt_id]]))
        x_left.append(sides[0] == "model-x")
    x_left_arr = np.array(x_left)

    assert attack(*_vectors(raw_pairs), x_left_arr) >= 0.95  # the attack works on the uploads ...
    left, right = _vectors(served_pairs)
    lo, hi = chance_band(len(served_pairs))
    accuracy = attack(left, right, x_left_arr)
    assert lo <= accuracy <= hi, (accuracy, (lo, hi))  # ... and is a coin flip on what is served
    # Stronger than chance: no feature differs within any pair.
    assert np.array_equal(left, right)
    if fmt == "mp4":
        # Outside the frames' own data, the two files of a pair are the same bytes.
        for a, b in served_pairs:
            pos = a.index(b"mdat") - 4
            assert a[:pos + 8] == b[:pos + 8]
