"""Served clips of one prompt have one size, so Content-Length and loading time cannot tell models apart.

The growing itself (clear codes inside the image data) is tested in tests/app/media/test_canonical.py, and
the attacker's view of it in tests/security/test_byte_side_channels.py.
"""

import io
import random

from PIL import Image, ImageChops

from app.media.storage import store_bytes
from app.models import Clip, Pair
from tests.factories import gif_bytes, make_study


def _noisy_gif(frames: int = 4, size=(32, 32)) -> bytes:
    rng = random.Random(1)
    images = [Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
              .convert("P", palette=Image.Palette.ADAPTIVE) for _ in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=125, loop=0)
    return buf.getvalue()


def _frames(data: bytes) -> list[Image.Image]:
    im = Image.open(io.BytesIO(data))
    out = []
    for i in range(im.n_frames):
        im.seek(i)
        out.append(im.convert("RGB"))
    return out


def test_both_sides_of_a_pair_are_served_at_one_size(client, session):
    study = make_study(session, n_prompts=1)
    prompt = study.prompts[0]
    clips = []
    for model, data in zip(study.models, (gif_bytes(), _noisy_gif()), strict=True):
        stored = store_bytes(data)
        clip = Clip(study_id=study.id, model_id=model.id, prompt_id=prompt.id, seed=0, status="done",
                    storage_name=stored.storage_name, sha256=stored.sha256, size_bytes=stored.size_bytes,
                    width=32, height=32, frames=4, fps=8)
        session.add(clip)
        clips.append((clip, data))
    session.flush()
    session.add(Pair(study_id=study.id, prompt_id=prompt.id, clip_a_id=clips[0][0].id, clip_b_id=clips[1][0].id))
    session.commit()
    assert abs(len(clips[0][1]) - len(clips[1][1])) > 500  # the stored files differ a lot in size

    served = [client.get(f"/m/{clip.media_token}") for clip, _ in clips]
    assert all(r.status_code == 200 for r in served)
    lengths = {int(r.headers["content-length"]) for r in served}
    assert len(lengths) == 1, lengths
    for (_, original), response in zip(clips, served, strict=True):
        for a, b in zip(_frames(original), _frames(response.content), strict=True):
            assert ImageChops.difference(a, b).getbbox() is None
