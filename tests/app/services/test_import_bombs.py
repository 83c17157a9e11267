"""Hostile files in an import folder: refused by name and limit before any decoding, and nothing is stored.

The decoders are replaced by traps for these tests: a bomb that reached Pillow, ``sanitize_gif`` or
``inspect_gif`` fails the test at once (AssertionError is not a GifError), whatever time or memory the
decode would have taken.
"""

from __future__ import annotations

import io
import os
import threading
import time

import pytest
from PIL import Image
from sqlalchemy import func, select

from app.media.storage import media_root
from app.models import Clip, Pair
from app.services import attention, clips
from app.services.attention import ensure_attention_pairs
from app.services.clips import ClipImportError, import_gif_folder
from tests.factories import NO_CHECKS, gif_bytes, make_clip, make_study
from tests.support.bombs import gif_bomb

HOSTILE: set[bytes] = set()  # the bombs of the running test: a decoder handed one of these fails the test


def _trap(*_args, **_kwargs):
    raise AssertionError("a hostile GIF reached a decoder")


def _guarded(original):
    def guard(data, *args, **kwargs):
        raw = data.getvalue() if isinstance(data, io.BytesIO) else data
        if isinstance(raw, bytes) and raw in HOSTILE:
            raise AssertionError("a hostile GIF reached a decoder")
        return original(data, *args, **kwargs)

    return guard


@pytest.fixture
def no_decoding(monkeypatch):
    """Pillow, ``sanitize_gif`` and ``inspect_gif`` fail on a registered bomb; attention copies never decode."""
    HOSTILE.clear()
    monkeypatch.setattr(Image, "open", _guarded(Image.open))
    monkeypatch.setattr(clips, "sanitize_gif", _guarded(clips.sanitize_gif))
    monkeypatch.setattr(clips, "inspect_gif", _guarded(clips.inspect_gif))
    for name in ("applicable_variants", "degrade_gif", "duplicate_gif"):
        monkeypatch.setattr(attention, name, _trap)
    yield HOSTILE
    HOSTILE.clear()


def _folder(tmp_path, study, bad: dict[str, bytes]):
    """Good GIFs for every model x prompt, except ``bad`` (``model/prompt`` -> bytes) in their place."""
    folder = tmp_path / "gifs"
    for m in study.models:
        (folder / m.name).mkdir(parents=True, exist_ok=True)
        for p in study.prompts:
            key = f"{m.name}/{p.external_id}"
            (folder / m.name / f"{p.external_id}.gif").write_bytes(bad.get(key, gif_bytes()))
    return folder


def _stored(session):
    files = [p for p in media_root().iterdir() if not p.name.startswith(".")]
    return session.scalar(select(func.count()).select_from(Clip)), session.scalar(
        select(func.count()).select_from(Pair)), len(files)


@pytest.mark.parametrize(("bomb", "limit"), [
    (gif_bomb(4096, 4096, 2), "BLINDPAIR_GIF_MAX_SIDE"),  # 85 bytes: 25 s and 1.4 GB to import before
    (gif_bomb(512, 512, 300), "BLINDPAIR_GIF_MAX_PIXELS"),  # a few KB: MemoryError before
    (gif_bomb(64, 64, 2000), "BLINDPAIR_GIF_MAX_FRAMES"),  # 46 KB: 156 s before
], ids=["huge-screen", "300-frames", "2000-frames"])
def test_a_bomb_is_refused_before_decoding_and_nothing_is_stored(session, tmp_path, no_decoding, bomb, limit):
    study = make_study(session, models=("fast", "slow"), n_prompts=1, qc=NO_CHECKS)
    no_decoding.add(bomb)
    folder = _folder(tmp_path, study, {"slow/p000": bomb})
    with pytest.raises(ClipImportError) as info:
        import_gif_folder(session, study_id=study.id, folder=folder)
    bomb_errors = [e for e in info.value.errors if e.startswith("slow/p000.gif:")]
    assert bomb_errors and limit in bomb_errors[0] and "refused before decoding" in bomb_errors[0]
    session.rollback()
    assert _stored(session) == (0, 0, 0)


class _FifoWriter:
    """Writes a valid GIF into a FIFO whenever a reader opens it, so a reader that blocks is not stuck forever:
    without the check, the import would read the GIF and store it; with it, the FIFO is refused unread."""

    def __init__(self, path, data: bytes) -> None:
        self.path, self.data, self.stop = path, data, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until a reader has it open
            except OSError:
                time.sleep(0.01)
                continue
            try:
                os.set_blocking(fd, True)
                os.write(fd, self.data)
            except OSError:
                pass  # the reader went away (it refused the FIFO): nothing to write to
            finally:
                os.close(fd)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def test_a_fifo_named_like_a_gif_is_refused_not_waited_on(session, tmp_path):
    study = make_study(session, models=("fast", "slow"), n_prompts=1, qc=NO_CHECKS)
    folder = _folder(tmp_path, study, {})
    fifo = folder / "slow" / "p000.gif"
    fifo.unlink()
    os.mkfifo(fifo)
    writer = _FifoWriter(fifo, gif_bytes())
    try:
        with pytest.raises(ClipImportError) as info:
            import_gif_folder(session, study_id=study.id, folder=folder)
    finally:
        writer.close()
    assert any(e.startswith("slow/p000.gif:") and "FIFO" in e for e in info.value.errors), info.value.errors
    session.rollback()
    assert _stored(session) == (0, 0, 0)


def test_attention_checks_skip_a_stored_bomb_without_decoding_it(session, no_decoding):
    """A clip imported before the budget existed must not take the server down when QC is switched on."""
    study = make_study(session, models=("fast", "slow"), n_prompts=1)
    clip = make_clip(session, model=study.models[0], prompt=study.prompts[0])
    bomb = gif_bomb(512, 512, 300)
    no_decoding.add(bomb)
    (media_root() / clip.storage_name).write_bytes(bomb)
    assert ensure_attention_pairs(session, study_id=study.id) == 0
    assert session.scalar(select(func.count()).select_from(Clip).where(Clip.origin == "degraded")) == 0
