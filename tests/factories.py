"""Small factories that build valid rows directly, for tests that need data, not a service under test."""

from __future__ import annotations

import io
import itertools

from PIL import Image
from sqlalchemy.orm import Session

from app.criteria import DEFAULT_CRITERIA
from app.media.storage import store_bytes
from app.models import Clip, Criterion, Evaluator, Pair, Prompt, Study, StudyModel, User

_seq = itertools.count(1)


def gif_bytes(frames: int = 4, size: tuple[int, int] = (32, 32), fps: float = 8, colour=(200, 40, 40)) -> bytes:
    """A small animated GIF: a square moving across a flat background."""
    images = []
    for i in range(frames):
        im = Image.new("RGB", size, (20, 20, 20))
        x = (i * size[0] // max(frames, 1)) % size[0]
        for dx in range(min(6, size[0] - x)):
            for dy in range(6):
                im.putpixel((x + dx, dy + 2), colour)
        images.append(im.convert("P", palette=Image.Palette.ADAPTIVE))
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def make_user(session: Session, *, role: str = "researcher", email: str | None = None,
              password: str = "correct horse battery") -> User:
    from argon2 import PasswordHasher

    user = User(email=email or f"user{next(_seq)}@example.org", password_hash=PasswordHasher().hash(password),
                role=role)
    session.add(user)
    session.flush()
    return user


def make_study(session: Session, *, models: tuple[str, ...] = ("lightning", "animatediff"),
               n_prompts: int = 3, themes: tuple[str, ...] = ("nature", "sports"), status: str = "open",
               votes_per_pair: int = 3, pairs_per_session: int = 3, **kw) -> Study:
    n = next(_seq)
    study = Study(slug=f"study-{n}", name=f"Study {n}", status=status, votes_per_pair=votes_per_pair,
                  pairs_per_session=pairs_per_session,
                  settings={"seeds": [0], "frames": 4, "width": 32, "height": 32, "fps": 8}, **kw)
    session.add(study)
    session.flush()
    for i, name in enumerate(models):
        session.add(StudyModel(study_id=study.id, name=name, preset="", position=i))
    for i, c in enumerate(DEFAULT_CRITERIA):
        session.add(Criterion(study_id=study.id, key=c.key, label=c.label, description=c.description, position=i))
    for i in range(n_prompts):
        session.add(Prompt(study_id=study.id, external_id=f"p{i:03d}", text=f"a test prompt number {i}",
                           theme=themes[i % len(themes)], detail=("short", "medium", "long")[i % 3]))
    session.flush()
    session.refresh(study)
    return study


def make_clip(session: Session, *, model: StudyModel, prompt: Prompt, seed: int = 0, **gif_kw) -> Clip:
    stored = store_bytes(gif_bytes(**gif_kw))
    clip = Clip(study_id=model.study_id, model_id=model.id, prompt_id=prompt.id, seed=seed, origin="imported",
                status="done", storage_name=stored.storage_name, storage=stored.store, sha256=stored.sha256,
                size_bytes=stored.size_bytes, width=32, height=32, frames=gif_kw.get("frames", 4),
                fps=gif_kw.get("fps", 8))
    session.add(clip)
    session.flush()
    return clip


def make_pairs(session: Session, study: Study) -> list[Pair]:
    """A done clip for every model x prompt and a pair for every model pair of every prompt."""
    pairs = []
    prompts = session.query(Prompt).filter_by(study_id=study.id).order_by(Prompt.id).all()
    for prompt in prompts:
        clips = [make_clip(session, model=m, prompt=prompt) for m in study.models]
        for a, b in itertools.combinations(clips, 2):
            pair = Pair(study_id=study.id, prompt_id=prompt.id, clip_a_id=a.id, clip_b_id=b.id)
            session.add(pair)
            pairs.append(pair)
    session.flush()
    return pairs


def make_evaluator(session: Session, study: Study, **kw) -> Evaluator:
    ev = Evaluator(study_id=study.id, **kw)
    session.add(ev)
    session.flush()
    return ev

# For tests of generation or import that count clips and pairs: no attention-check copies are made.
NO_CHECKS = {"enabled": False}


def video_frames(frames: int = 16, size: tuple[int, int] = (64, 64), colour=(200, 40, 40)) -> list:
    """Frames whose number can be read back from the pixels: the top-left 16x16 patch has grey level 8 + 15 k
    in frame k (so a browser test can tell which frame is on screen); a square of ``colour`` moves below it."""
    import numpy as np

    w, h = size
    out = []
    for k in range(frames):
        f = np.full((h, w, 3), 30, np.uint8)
        f[:16, :16] = 8 + 15 * (k % 16)
        x = 16 + (k * (w - 24) // max(frames, 1)) % (w - 24)
        f[h // 2:h // 2 + 8, x:x + 8] = colour
        out.append(f)
    return out


def video_bytes(fmt: str = "mp4", frames: int = 16, size: tuple[int, int] = (64, 64), fps: float = 8,
                colour=(200, 40, 40)) -> bytes:
    from app.media import video

    return video.encode(video_frames(frames, size, colour), fps, fmt)


def make_video_pairs(session: Session, study: Study, *, fmt: str = "mp4", frames: int = 16, fps: float = 8,
                     size: tuple[int, int] = (64, 64)) -> list[Pair]:
    """Like ``make_pairs`` with MP4/WebM clips of ``frames`` numbered frames (``video_frames``); the study's
    clip_format is set to ``fmt``."""
    study.settings = {**(study.settings or {}), "clip_format": fmt, "frames": frames, "fps": fps}
    colours = [(200, 40, 40), (40, 160, 220), (90, 200, 60), (220, 200, 40)]
    pairs = []
    prompts = session.query(Prompt).filter_by(study_id=study.id).order_by(Prompt.id).all()
    for prompt in prompts:
        clips = []
        for i, m in enumerate(study.models):
            stored = store_bytes(video_bytes(fmt, frames, size, fps, colours[i % 4]), suffix="." + fmt)
            clip = Clip(study_id=study.id, model_id=m.id, prompt_id=prompt.id, seed=0, origin="imported",
                        status="done", storage_name=stored.storage_name, sha256=stored.sha256,
                        size_bytes=stored.size_bytes, width=size[0], height=size[1], frames=frames, fps=fps)
            session.add(clip)
            clips.append(clip)
        session.flush()
        for a, b in itertools.combinations(clips, 2):
            pair = Pair(study_id=study.id, prompt_id=prompt.id, clip_a_id=a.id, clip_b_id=b.id)
            session.add(pair)
            pairs.append(pair)
    session.flush()
    return pairs
