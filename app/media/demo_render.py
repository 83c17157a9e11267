"""Synthetic demo clips rendered on the CPU: clearly NOT an AI model, just something real to rate in a demo.

A clip is a procedural scene (sky, a travelling sun, layered waves, drifting particles) whose palette and
motion derive deterministically from the prompt text and seed, so each prompt gets its own animation.
Two styles stand in for two models that differ visibly:

- ``smooth``: continuous time, anti-aliased shapes, motion-blurred particles, full colour;
- ``jittery``: stuttering half-rate time with random jitter, half resolution, posterised colours, noise.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import GifImagePlugin, Image

STYLES = ("smooth", "jittery")
DEMO_MODELS: tuple[tuple[str, str, str], ...] = (
    ("demo-smooth", "smooth", "Synthetic demo renderer, not an AI model: procedural scene with smooth, coherent "
                              "motion and full colour. Demo data only."),
    ("demo-jittery", "jittery", "Synthetic demo renderer, not an AI model: the same scenes with stuttering motion, "
                                "posterised colours and noise, standing in for a cheaper model. Demo data only."),
)


@dataclass(frozen=True)
class _Scene:
    sky_top: np.ndarray
    sky_bottom: np.ndarray
    water_top: np.ndarray
    water_bottom: np.ndarray
    sun: np.ndarray
    horizon: float  # fraction of the height
    waves: np.ndarray  # (k, 4): amplitude (fraction of height), spatial frequency, cycles per clip, phase
    particles: np.ndarray  # (n, 5): x0, y0, vx, vy (fractions per clip), radius (fraction of width)
    particle_rgb: np.ndarray  # (n, 3)


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255


def _scene(prompt_text: str, seed: int) -> _Scene:
    digest = hashlib.sha256(f"{seed}\x00{prompt_text}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    words = set(prompt_text.lower().replace(",", " ").replace(".", " ").split())
    night = bool(words & {"night", "moonlit", "dark", "darkness", "dusk", "twilight", "midnight"})
    underwater = bool(words & {"underwater", "sea", "ocean", "reef", "diver", "whale", "jellyfish", "trench"})
    falling = bool(words & {"snow", "snowflakes", "rain", "raindrops", "petals", "leaves", "blossom", "confetti"})
    rising = bool(words & {"sparks", "embers", "fire", "flames", "bubbles", "steam", "fireflies", "lanterns"})

    hue = rng.random()
    sky_v = 0.25 if night else 0.95
    horizon = 0.25 if underwater else rng.uniform(0.5, 0.68)
    n = int(rng.integers(40, 70))
    particles = np.column_stack([
        rng.random(n), rng.random(n),
        rng.normal(0, 0.25, n), rng.normal(0, 0.15, n),
        rng.uniform(0.006, 0.02, n),
    ]).astype(np.float32)
    if falling:
        particles[:, 3] = np.abs(particles[:, 3]) + 0.35
    if rising:
        particles[:, 3] = -np.abs(particles[:, 3]) - 0.35
    hues = hue + 0.5 + rng.normal(0, 0.06, n)
    particle_rgb = np.stack([_rgb(h, 0.35, 1.0) for h in hues])
    waves = np.column_stack([
        rng.uniform(0.01, 0.04, 3), rng.uniform(1.5, 6.0, 3), rng.choice([-2, -1, 1, 2], 3), rng.random(3) * 6.28,
    ]).astype(np.float32)
    return _Scene(
        sky_top=_rgb(hue, 0.55, sky_v * 0.7), sky_bottom=_rgb(hue + 0.08, 0.35, sky_v),
        water_top=_rgb(hue + 0.45, 0.6, 0.75 if not night else 0.35),
        water_bottom=_rgb(hue + 0.5, 0.8, 0.3 if not night else 0.12),
        sun=_rgb(hue + 0.12, 0.25 if night else 0.6, 1.0),
        horizon=horizon, waves=waves, particles=particles, particle_rgb=particle_rgb,
    )


def _render_frame(scene: _Scene, t: float, width: int, height: int, *, soft: bool, trail: int,
                  rng: np.random.Generator | None) -> np.ndarray:
    ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None] / height
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, :] / width
    two_pi = 2 * np.pi

    img = scene.sky_top + (scene.sky_bottom - scene.sky_top) * np.clip(ys / scene.horizon, 0, 1)[..., None]
    img = np.broadcast_to(img, (height, width, 3)).copy()

    # The sun travels left to right along an arc once per clip.
    sx, sy = 0.1 + 0.8 * t, scene.horizon - 0.05 - 0.3 * np.sin(np.pi * t)
    d = np.sqrt((xs - sx) ** 2 + ((ys - sy) * height / width) ** 2)
    r = 0.09
    disc = np.clip((r - d) * width / 1.5, 0, 1) if soft else (d < r).astype(np.float32)
    glow = np.exp(-((d / (2.5 * r)) ** 2)) * 0.35 if soft else 0
    alpha = np.clip(disc + glow, 0, 1)[..., None]
    img = img * (1 - alpha) + scene.sun * alpha

    # Waves: a surface line made of travelling sines (whole cycles per clip, so the loop is seamless).
    surface = np.full_like(xs, scene.horizon)
    for amp, freq, cycles, phase in scene.waves:
        surface = surface + amp * np.sin(two_pi * freq * xs + two_pi * cycles * t + phase)
    depth = ys - surface
    water = np.clip(depth * height / 1.2, 0, 1)[..., None] if soft else (depth > 0).astype(np.float32)[..., None]
    shade = np.clip(depth / max(1e-3, 1 - scene.horizon), 0, 1)[..., None]
    water_rgb = scene.water_top + (scene.water_bottom - scene.water_top) * shade
    shimmer = 0.5 + 0.5 * np.sin(two_pi * (9 * xs + 3 * ys) - two_pi * 2 * t)
    water_rgb = water_rgb + (shimmer[..., None] * 25 * (1 - shade))
    img = img * (1 - water) + water_rgb * water

    # Particles drift (wrapping around); the smooth style adds a short motion-blur trail.
    p = scene.particles
    for k in range(trail, -1, -1):
        tk = t - k * 0.012
        px = (p[:, 0] + p[:, 2] * tk) % 1.0
        py = (p[:, 1] + p[:, 3] * tk) % 1.0
        weight = 1.0 / (1 + k)
        for (x, y, rad), rgb in zip(np.column_stack([px, py, p[:, 4]]), scene.particle_rgb, strict=True):
            cx, cy, rp = x * width, y * height, max(1.0, rad * width)
            x0, x1 = max(0, int(cx - 3 * rp)), min(width, int(cx + 3 * rp) + 1)
            y0, y1 = max(0, int(cy - 3 * rp)), min(height, int(cy + 3 * rp) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            gx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
            gy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
            dd = gx**2 + gy**2
            a = np.exp(-dd / (rp * rp)) if soft else (dd < rp * rp).astype(np.float32)
            a = (a * 0.9 * weight)[..., None]
            patch = img[y0:y1, x0:x1]
            img[y0:y1, x0:x1] = patch * (1 - a) + rgb * a

    if rng is not None:  # sensor-like noise for the cheap style
        img = img + rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_clip(prompt_text: str, *, style: str, seed: int = 0, frames: int = 16, width: int = 256,
                height: int = 256) -> list[Image.Image]:
    """Render one demo clip as RGB frames; the same arguments always give the same pixels."""
    if style not in STYLES:
        raise ValueError(f"unknown demo style {style!r}; use one of {', '.join(STYLES)}")
    if frames < 2 or width < 16 or height < 16:
        raise ValueError("a demo clip needs at least 2 frames and 16x16 pixels")
    scene = _scene(prompt_text, seed)
    out = []
    if style == "smooth":
        for i in range(frames):
            out.append(Image.fromarray(_render_frame(scene, i / frames, width, height, soft=True, trail=3, rng=None)))
        return out

    rng = np.random.default_rng(seed + 7919)
    lw, lh = max(8, width // 2), max(8, height // 2)
    for i in range(frames):
        # Half-rate time with jitter: the motion stutters and wobbles instead of flowing.
        t = (i // 2) * 2 / frames + rng.uniform(-0.04, 0.04)
        small = _render_frame(scene, t, lw, lh, soft=False, trail=0, rng=rng)
        posterised = (small // 64) * 64 + 32  # four levels per channel
        out.append(Image.fromarray(posterised.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST))
    return out


def encode_gif(frames: list[Image.Image], fps: float) -> bytes:
    """Encode frames as a looping GIF at ``fps`` (Pillow, one adaptive palette per frame, no metadata)."""
    if len(frames) < 2:
        raise ValueError("an animated GIF needs at least 2 frames")
    paletted = [f.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256) for f in frames]
    buf = io.BytesIO()
    paletted[0].save(buf, format="GIF", save_all=True, append_images=paletted[1:], duration=round(1000 / fps),
                     loop=0, optimize=False, disposal=1)
    data = buf.getvalue()
    # Pillow folds identical consecutive frames into one longer frame; that would break the equal-frame-count
    # rule between models, so it is caught here rather than at import.
    with GifImagePlugin.GifImageFile(io.BytesIO(data)) as im:
        if im.n_frames != len(frames):
            raise ValueError(f"{len(frames) - im.n_frames} frame(s) repeat the one before and were merged by the "
                             "GIF writer")
    return data


def render_demo_gif(prompt_text: str, *, style: str, seed: int = 0, frames: int = 16, width: int = 256,
                    height: int = 256, fps: float = 8) -> bytes:
    """``render_clip`` + ``encode_gif`` in one call."""
    return encode_gif(render_clip(prompt_text, style=style, seed=seed, frames=frames, width=width, height=height),
                      fps)
