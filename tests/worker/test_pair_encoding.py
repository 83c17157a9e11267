"""Both clips of a pair are served at one lossy GIF level, decided when the pair is complete (issue 21).

Before, each clip got the mildest level that fitted it alone, so on the real AnimateDiff GIFs one clip of a
prompt was served at level 10 and its rival at 20. Now the worker keeps each clip's uncompressed master and the
last clip of a prompt and seed serves the whole group at the harshest of their fit levels, before pairing.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.media import canonical
from app.media.compression import psnr_db
from app.media.gif import inspect_gif
from app.media.storage import media_path
from app.models import Clip, Pair
from app.services import generation as svc
from app.services.pair_encoding import group_level
from tests.conftest import IN_CI
from tests.factories import NO_CHECKS, make_study
from worker import gif as worker_gif
from worker import pair_encoding, tasks

needs_gifsicle = pytest.mark.skipif(shutil.which("gifsicle") is None and not IN_CI,
                                    reason="gifsicle is not installed (apt-get install gifsicle; .ci/run does)")
SETTINGS = {"seeds": [0], "frames": 4, "width": 32, "height": 32, "fps": 8, "base_model": "none", "dtype": "float32"}


def _texture(seed: int, amplitude: int, n: int = 4, size: int = 96) -> list[Image.Image]:
    """Busy texture that lossy LZW shrinks; a larger ``amplitude`` is harder to compress."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
    return [Image.fromarray(np.clip(np.roll(big, i, axis=1) + rng.integers(-amplitude, amplitude + 1, big.shape),
                                    0, 255).astype(np.uint8)) for i in range(n)]


@needs_gifsicle
def test_two_clips_that_fit_at_different_levels_are_served_at_the_harsher_one(monkeypatch):
    calm, busy = (worker_gif.encode_master(_texture(1, a), fps=8) for a in (2, 12))
    # A budget the calm clip meets at a middle level, which leaves the busy one over it.
    middle = worker_gif.LOSSY_LEVELS[3]
    monkeypatch.setattr(worker_gif, "SIZE_BUDGET_BYTES", len(worker_gif.compress(calm, middle)))
    fit_calm, fit_busy = worker_gif.fit_level(calm), worker_gif.fit_level(busy)
    assert fit_calm == middle and fit_busy > fit_calm  # alone, each would get its own level
    level = group_level([fit_calm, fit_busy])
    assert level == fit_busy
    served = [worker_gif.served_copy(m, level) for m in (calm, busy)]
    assert all(len(s) <= worker_gif.SIZE_BUDGET_BYTES for s in served)  # the harsher fit still fits both
    # The calm clip pays for its rival: served harsher than it alone needed, so its PSNR drops.
    psnr_alone = psnr_db(calm, worker_gif.served_copy(calm, fit_calm))
    psnr_paired = psnr_db(calm, served[0])
    assert psnr_alone is not None and psnr_paired is not None and psnr_paired < psnr_alone


def _demo_study(session):
    study = make_study(session, models=("smooth", "jittery"), n_prompts=1, qc=NO_CHECKS)
    for model, preset in zip(study.models, ("demo-smooth", "demo-jittery"), strict=True):
        model.preset = preset
    study.settings = dict(SETTINGS)
    session.commit()
    return study


def _queue(session, study) -> list[int]:
    sent: list[int] = []
    svc.queue_batch(session, study_id=study.id, send=sent.extend)
    session.commit()  # SQLite transactions begin IMMEDIATE: the task's own session needs the lock
    return sent


@needs_gifsicle
def test_a_clip_waits_unserved_for_its_rival_then_both_share_one_level(session, monkeypatch):
    import worker.generate as gen

    # Content decides the level a clip alone needs: here the first clip fits at 5 and its rival needs 30.
    fits = iter([5, 30])
    monkeypatch.setattr(gen, "fit_level", lambda master: next(fits))
    study = _demo_study(session)
    first, second = _queue(session, study)
    assert tasks.run_clip(first) == "done"
    session.expire_all()
    waiting = session.get(Clip, first)
    # Recorded, its master kept, but not served: nothing can pair it or copy it for a check at a level that may
    # still change.
    assert waiting.status == "done" and waiting.master_name and waiting.fit_level == 5
    assert waiting.storage_name is None and waiting.lossy_level is None
    assert session.scalar(select(Pair.id)) is None
    session.commit()  # SQLite transactions begin IMMEDIATE: the task's own session needs the lock
    assert tasks.run_clip(second) == "done"
    session.expire_all()
    clips = [session.get(Clip, i) for i in (first, second)]
    assert [c.fit_level for c in clips] == [5, 30]
    assert [c.lossy_level for c in clips] == [30, 30]  # one level for the pair: the harsher fit
    for clip in clips:
        master = media_path(clip.master_name).read_bytes()
        served = media_path(clip.storage_name).read_bytes()
        assert clip.psnr_db == psnr_db(master, served)  # PSNR against its own uncompressed master
        assert served != master and inspect_gif(served).frames == 4
        # Served in the one canonical layout (keyed colour orders): nothing of gifsicle or the level in the bytes.
        assert canonical.is_canonical(served) and not canonical.is_canonical(served[:-1])
    pair = session.scalars(select(Pair).where(Pair.kind == "normal")).one()
    assert {pair.clip_a_id, pair.clip_b_id} == {first, second}


@needs_gifsicle
def test_a_group_left_unserved_by_a_failure_is_served_by_the_sweeper(session, monkeypatch):
    study = _demo_study(session)
    first, second = _queue(session, study)
    real = pair_encoding.served_copy
    monkeypatch.setattr(pair_encoding, "served_copy", lambda master, level: (_ for _ in ()).throw(OSError("disk")))
    assert [tasks.run_clip(i) for i in (first, second)] == ["done", "done"]
    session.expire_all()
    assert all(session.get(Clip, i).storage_name is None for i in (first, second))
    assert session.scalar(select(Pair.id)) is None  # nothing served half-done
    monkeypatch.setattr(pair_encoding, "served_copy", real)
    session.commit()
    assert sorted(pair_encoding.encode_waiting()) == [first, second]
    session.expire_all()
    clips = [session.get(Clip, i) for i in (first, second)]
    assert clips[0].lossy_level == clips[1].lossy_level is not None and all(c.storage_name for c in clips)
    assert session.scalar(select(Pair.id).where(Pair.kind == "normal")) is not None
    session.commit()
    assert pair_encoding.encode_waiting() == []  # served once: nothing left
