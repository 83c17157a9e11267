"""Blinding: walk everything an evaluator can reach and find nothing that says which model made a clip."""

from __future__ import annotations

import base64
import io
import itertools
import json

import numpy as np
import pytest
from bs4 import BeautifulSoup
from itsdangerous import URLSafeTimedSerializer
from PIL import Image

from app.config import get_settings
from app.media.storage import store_bytes
from app.models import Clip, Pair, Prompt, StudyModel
from app.services.attention import ensure_attention_pairs
from tests.factories import make_study

MODELS = [
    (731011, "zz-lightning-secret", "zz-preset-4step-distilled", "zz-desc-bytedance"),
    (731012, "zz-animatediff-secret", "zz-preset-25step-ddim", "zz-desc-guoyww"),
]
CLIP_ID_BASE = 958700


def _gif_with_metadata(model_name: str, colour) -> bytes:
    """An animated GIF carrying the model name in a comment, as an encoder or a careless export might."""
    frames = []
    for i in range(4):
        im = Image.new("RGB", (32, 32), (10, 10, 10))
        im.paste(colour, (i * 8, 4, i * 8 + 6, 10))
        frames.append(im.convert("P", palette=Image.Palette.ADAPTIVE))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=125, loop=0,
                   comment=f"generator={model_name}".encode())
    return buf.getvalue()



@pytest.fixture
def secret_study(session):
    study = make_study(session, models=(), n_prompts=3, pairs_per_session=3, votes_per_pair=2,
                       qc={"attention_rate": 0.5})
    models = []
    for i, (mid, name, preset, desc) in enumerate(MODELS):
        m = StudyModel(id=mid, study_id=study.id, name=name, preset=preset, description=desc, position=i,
                       overrides={"steps": 4 if i == 0 else 25})
        session.add(m)
        models.append(m)
    session.flush()
    ids = itertools.count(CLIP_ID_BASE)
    clips = []
    for prompt in session.query(Prompt).filter_by(study_id=study.id).order_by(Prompt.id):
        pair_clips = []
        for m, colour in zip(models, [(250, 30, 30), (30, 30, 250)], strict=True):
            data = _gif_with_metadata(m.name, colour)
            stored = store_bytes(data)
            clip = Clip(id=next(ids), study_id=study.id, model_id=m.id, prompt_id=prompt.id, status="done",
                        storage_name=stored.storage_name, storage=stored.store, sha256=stored.sha256,
                        size_bytes=stored.size_bytes, width=32, height=32, frames=4, fps=8, origin="generated",
                        device="cuda:zz-h100",
                        generation={"model": m.name})
            session.add(clip)
            pair_clips.append(clip)
        session.flush()
        session.add(Pair(study_id=study.id, prompt_id=prompt.id, clip_a_id=pair_clips[0].id,
                         clip_b_id=pair_clips[1].id))
        clips += pair_clips
    session.flush()
    # Attention checks too: their copies are clips with files of their own, served through the same pages.
    assert ensure_attention_pairs(session, study_id=study.id, n_sources=2) == 4
    clips = session.query(Clip).filter_by(study_id=study.id).all()
    assert len(study.criteria) == 6
    secrets = {name for _, name, _, _ in MODELS} | {p for _, _, p, _ in MODELS} | {d for _, _, _, d in MODELS}
    secrets |= {"zz-h100", "lightning", "animatediff", "4step", "25step"}
    for c in clips:
        secrets |= {c.storage_name, c.storage_name.removesuffix(".gif"), c.sha256, c.sha256[:16], str(c.id)}
    secrets |= {str(mid) for mid, *_ in MODELS}
    tokens = [c.media_token for c in clips]
    session.commit()
    return study, secrets, tokens


def _decode_cookie_payloads(value: str) -> list[str]:
    """Every readable layer of a signed cookie: the raw value, its base64 payload, the itsdangerous payload."""
    out = [value]
    head = value.split(".")[0]
    try:
        out.append(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode("utf-8", "replace"))
    except ValueError:
        pass
    try:
        out.append(json.dumps(URLSafeTimedSerializer(get_settings().secret_key, salt="bp-evaluator").loads(value)))
    except Exception:  # not the evaluator cookie
        pass
    return out


class Recorder:
    """Wraps a TestClient and keeps every request URL and response for the leak check."""

    def __init__(self, client):
        self.client = client
        self.seen: list[tuple[str, str, bytes, list[tuple[str, str]]]] = []

    def __call__(self, method: str, url: str, **kw):
        r = self.client.request(method, url, follow_redirects=False, **kw)
        self.seen.append((method, url, r.content, list(r.headers.multi_items())))
        return r


def _hidden(r, name):
    return BeautifulSoup(r.text, "html.parser").find("input", attrs={"name": name})["value"]


def test_nothing_an_evaluator_can_reach_names_a_model(client, secret_study):
    study, secrets, tokens = secret_study
    leaks = walk_and_find_leaks(client, study, secrets, tokens)
    assert leaks == [], f"model-identifying strings reached the evaluator: {leaks[:10]}"


def walk_and_find_leaks(client, study, secrets, tokens, *, check_body=None) -> list:
    """Every page, form, API answer and clip an evaluator can reach; the secrets found in any of them.
    ``check_body(url, body)``: a further check of every response body (e.g. a video's container metadata)."""
    go = Recorder(client)
    media_urls: set[str] = set()
    gif_pages = 0

    go("GET", "/join/not-a-real-invite")
    page = go("GET", f"/join/{study.invite_token}?PROLIFIC_PID=pp-123")
    r = go("POST", f"/join/{study.invite_token}",
           data={"csrf_token": _hidden(page, "csrf_token"), "consent": "yes", "external_id": "pp-123"})
    assert r.status_code == 303
    keys = [c.key for c in study.criteria]
    first = True
    while True:
        page = go("GET", "/e/pair")
        if page.status_code == 303:
            break
        soup = BeautifulSoup(page.text, "html.parser")
        media_urls |= {img["src"] for img in soup.select("img.clip, video.clip source")}
        # The first-frame posters: the GIF's still under it, the video's poster, the preloads in the head.
        media_urls |= {img["src"] for img in soup.select("img.poster")}
        gif_pages += bool(soup.select("img.clip"))
        media_urls |= {v["poster"] for v in soup.select("video.clip[poster]")}
        media_urls |= {link["href"] for link in soup.select("link[rel=preload]") if link["href"].startswith("/m/")}
        data = {"csrf_token": _hidden(page, "csrf_token"), "assignment": _hidden(page, "assignment")}
        if first:  # the "missing answers" re-render is a page too
            go("POST", "/e/vote", data={**data, f"c_{keys[0]}": "left"})
            first = False
        go("POST", "/e/vote", data={**data, **{f"c_{k}": "right" for k in keys}})
    done = go("GET", "/e/done")
    assert done.status_code == 200
    for url in sorted(media_urls):
        assert go("GET", url).status_code == 200
        go("GET", url + "?r=1")
    go("GET", "/m/not-a-token")

    api = go("POST", "/api/v1/evaluate/join", json={"invite_token": study.invite_token, "external_id": "pp-9"})
    headers = {"X-Evaluator-Token": api.json()["evaluator_token"]}
    while True:
        body = go("GET", "/api/v1/evaluate/pair", headers=headers).json()
        if body["status"] == "done":
            break
        pair = body["pair"]
        go("GET", pair["left_media_url"])
        go("POST", "/api/v1/evaluate/votes", headers=headers,
           json={"assignment_token": pair["assignment_token"], "choices": dict.fromkeys(keys, "left")})
        go("POST", "/api/v1/evaluate/votes", headers=headers,
           json={"assignment_token": pair["assignment_token"], "choices": dict.fromkeys(keys, "tie")})

    assert len(media_urls) >= 4
    assert any(url.endswith("/poster") for url in media_urls) or not gif_pages  # GIF pairs show posters
    for token in tokens:  # every clip an evaluator could be shown, attention-check copies included
        assert go("GET", f"/m/{token}").status_code == 200
        assert go("GET", f"/m/{token}/poster").status_code == 200
    go("GET", "/m/not-a-token/poster")
    leaks = []
    for method, url, body, headers in go.seen:
        lower_secrets = {s.lower() for s in secrets}
        texts = [url, *[f"{k}: {v}" for k, v in headers]]
        for k, v in headers:
            if k.lower() == "set-cookie":
                texts += _decode_cookie_payloads(v.split(";", 1)[0].split("=", 1)[1])
        for text in texts:
            leaks += [(method, url, "url/header/cookie", s) for s in lower_secrets if s in text.lower()]
        raw = body.lower()
        leaks += [(method, url, "body", s) for s in lower_secrets if s.encode() in raw]
        if body[:6] == b"GIF89a":
            im = Image.open(io.BytesIO(body))
            assert not {"comment", "xmp"} & set(im.info), f"GIF metadata served from {url}"
            # The only application block left is the looping one browsers need.
            assert im.info.get("extension", (b"NETSCAPE2.0",))[0].startswith(b"NETSCAPE2.0")
        if body[:8] == b"\x89PNG\r\n\x1a\n":  # a poster: image chunks only, no text, time or profile
            assert {kind for kind, _ in _png_chunks(body)} <= {b"IHDR", b"PLTE", b"IDAT", b"IEND"}, url
        if check_body is not None:
            check_body(url, body)
    # The browser keeps the cookies too: decode what the client ended up holding.
    for name, value in client.cookies.items():
        for text in _decode_cookie_payloads(value):
            leaks += [("cookie", name, "cookie", s) for s in secrets if s.lower() in text.lower()]
    return leaks


def _png_chunks(data: bytes) -> list[tuple[bytes, int]]:
    """(type, length) of every chunk of a PNG."""
    out, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        out.append((data[pos + 4:pos + 8], length))
        pos += 12 + length
    return out


def test_every_poster_of_a_prompt_is_its_clips_first_frame_at_one_length(client, session, secret_study):
    """The posters (a second file per clip) carry the clips' side channel unless grown like them: one length,
    one chunk layout, the same headers for every clip of a prompt, check copies included; and each is exactly
    the first frame the clip itself shows."""
    from app.media import poster

    study, _secrets, _tokens = secret_study
    by_prompt: dict[int, list] = {}
    for clip in session.query(Clip).filter_by(study_id=study.id):
        r = client.get(f"/m/{clip.media_token}/poster")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["cache-control"] == "private, max-age=3600" and "last-modified" not in r.headers
        shown = np.asarray(Image.open(io.BytesIO(client.get(f"/m/{clip.media_token}").content)).convert("RGB"))
        still = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
        assert still.shape == shown.shape and (still == shown).all()  # native size, not one level off
        # Nothing but the pixels: the served poster is what anyone holding the first frame would write.
        assert r.content == poster.pad_png(poster.png(shown, palette=True), len(r.content))
        by_prompt.setdefault(clip.prompt_id, []).append(
            (len(r.content), _png_chunks(r.content), sorted(k for k in r.headers if k != "etag")))
        again = client.get(f"/m/{clip.media_token}/poster", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and not again.content
    # (That plain posters of two models differ in length, and a script tells them apart by it, is shown in
    # tests/security/test_byte_side_channels.py::test_an_attackers_classifier_over_the_served_posters_is_at_chance.)
    assert any(len(served) > 2 for served in by_prompt.values())  # a prompt with its check copies
    for served in by_prompt.values():
        assert all(s == served[0] for s in served)  # one length, one layout, the same headers
    assert client.get("/m/not-a-token/poster").status_code == 404


def test_the_check_detects_a_leak(secret_study):
    """Guard against a vacuous test: the same check flags a page that does mention a model or a clip file."""
    _study, secrets, _tokens = secret_study
    bad_body = b"<img src='/m/xyz' data-x='zz-lightning-secret'>"
    assert any(s.encode() in bad_body.lower() for s in secrets)
    raw_gif = _gif_with_metadata("zz-lightning-secret", (1, 2, 3))
    assert "comment" in Image.open(io.BytesIO(raw_gif)).info


def test_the_study_description_stays_with_researchers(client, session, secret_study):
    # The study form says "for researchers; evaluators never see it", and descriptions name the models (the
    # demo's says which of its two renderers stutters); the instructions page used to print it.
    study, _secrets, _tokens = secret_study
    study = session.merge(study)
    study.description = "Comparing zz-lightning-secret against its 25-step teacher"
    session.commit()
    page = client.get(f"/join/{study.invite_token}")
    assert page.status_code == 200 and "zz-lightning-secret" not in page.text


def test_every_clip_of_a_prompt_is_served_in_one_layout_at_one_length(client, session, secret_study):
    """The bytes of the clips shown beside each other, attention-check copies included, differ in nothing the
    encoding chose: same length, same blocks, same tables, no padding block (issue 12). The uploads here
    carry the model's name in a comment of different lengths, so they differ in all of that."""
    from tests.app.media.anatomy import byte_features

    study, _secrets, _tokens = secret_study
    by_prompt: dict[int, list[bytes]] = {}
    for clip in session.query(Clip).filter_by(study_id=study.id):
        r = client.get(f"/m/{clip.media_token}")
        assert r.status_code == 200
        by_prompt.setdefault(clip.prompt_id, []).append(r.content)
    assert any(len(bodies) > 2 for bodies in by_prompt.values())  # a prompt with its check copies
    for bodies in by_prompt.values():
        features = [byte_features(b) for b in bodies]
        assert all(f == features[0] for f in features), [f["size"] for f in features]
        assert features[0]["extensions"] == 1 and features[0]["global_table"] == 0
        assert all(v == 0 for k, v in features[0].items() if k.endswith("unused_palette_nonzero"))
