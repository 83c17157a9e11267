"""Demo renderer: deterministic per prompt and seed, two visibly different styles, valid GIFs."""

from __future__ import annotations

import numpy as np
import pytest

from app.media.demo_render import DEMO_MODELS, encode_gif, render_clip, render_demo_gif
from app.media.gif import inspect_gif

PROMPT = "Snowflakes swirl around a glowing winter lantern."


def _arrays(frames):
    return [np.asarray(f, dtype=np.int16) for f in frames]


def test_same_inputs_same_pixels_different_prompt_different_scene():
    a = _arrays(render_clip(PROMPT, style="smooth", seed=0, frames=4, width=64, height=64))
    b = _arrays(render_clip(PROMPT, style="smooth", seed=0, frames=4, width=64, height=64))
    c = _arrays(render_clip("A cheetah sprints across the savanna.", style="smooth", seed=0, frames=4, width=64,
                            height=64))
    d = _arrays(render_clip(PROMPT, style="smooth", seed=1, frames=4, width=64, height=64))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert np.abs(a[0] - c[0]).mean() > 10
    assert np.abs(a[0] - d[0]).mean() > 10


@pytest.mark.parametrize("style", ["smooth", "jittery"])
def test_frames_move_and_have_the_requested_shape(style):
    frames = render_clip(PROMPT, style=style, seed=3, frames=8, width=96, height=64)
    assert len(frames) == 8 and all(f.size == (96, 64) and f.mode == "RGB" for f in frames)
    arr = _arrays(frames)
    assert all(np.abs(arr[i + 1] - arr[i]).mean() > 0.5 for i in range(7))  # every frame changes


def test_styles_differ_visibly():
    smooth = _arrays(render_clip(PROMPT, style="smooth", frames=6, width=128, height=128))
    jittery = _arrays(render_clip(PROMPT, style="jittery", frames=6, width=128, height=128))
    # Posterised to four levels per channel: at most 64 colours; the smooth style uses far more.
    colours = [len(np.unique(f.reshape(-1, 3), axis=0)) for f in smooth], \
              [len(np.unique(f.reshape(-1, 3), axis=0)) for f in jittery]
    assert min(colours[0]) > 1000 and max(colours[1]) <= 64
    # Noise makes neighbouring pixels of the jittery style differ far more (roughness).
    rough = [np.abs(np.diff(f, axis=1)).mean() for f in (smooth[0], jittery[0])]
    assert rough[1] > 2 * rough[0]


def test_gif_encoding_round_trip():
    data = render_demo_gif(PROMPT, style="jittery", frames=16, width=64, height=64, fps=10)
    info = inspect_gif(data)
    assert (info.frames, info.width, info.height, info.fps, info.loop) == (16, 64, 64, 10, 0)
    assert info.extensions == ("app:NETSCAPE2.0",)


def test_identical_frames_are_refused_rather_than_merged():
    frames = render_clip(PROMPT, style="smooth", frames=3, width=32, height=32)
    with pytest.raises(ValueError, match="merged"):
        encode_gif([frames[0], frames[0], frames[1]], fps=8)


def test_demo_models_are_labelled_synthetic():
    assert [m[0] for m in DEMO_MODELS] == ["demo-smooth", "demo-jittery"]
    assert all("not an AI model" in m[2] for m in DEMO_MODELS)
    with pytest.raises(ValueError, match="unknown demo style"):
        render_clip(PROMPT, style="fancy")
