"""GIF encoding: frames in, bytes out, nothing in the file but pixels and timing.

Three steps. Pillow gives every frame its own median-cut palette of 256 colours, without dithering: the most
faithful of the quantisers measured (bench/gif_encoding.py), and no banding on smooth skies. Then gifsicle's
lossy LZW (``--lossy``, https://www.lcdf.org/gifsicle/man.html) lets the compressor reuse a dictionary string
whose colours are close to, rather than equal to, the next pixels'. Last, the frames gifsicle wrote are
written again by the canonical writer every stored clip goes through (``app.media.canonical``), so nothing
of gifsicle's stream (its lossy level, its block layout) reaches an evaluator: only its pixels. That re-encode
keeps about 80 % of the lossy step's saving (the exact LZW of the lossy pixels cannot follow gifsicle's
approximate matches), so the budget is checked on the canonical bytes. A pair page must load in under 2 s at
20 Mbit/s, and the media route serves every clip of a prompt at the length of the longest, so every clip must
stay under 2.5 MB; at 512x512 and 16 frames Pillow alone writes 2-4 MB of AnimateDiff content. Palette tricks
(one shared palette, inter-frame transparency) saved at most 20 % and cost more fidelity than lossy LZW.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from app.media import canonical
from app.media.gif import GifInfo, inspect_gif

log = logging.getLogger(__name__)

# gifsicle 1.93 (Debian 12/13, Ubuntu 22.04/24.04) levels, mildest first. Level 5 costs about 2.5 dB PSNR on
# AnimateDiff clips and leaves smooth areas alone: the artefacts are short streaks in busy texture, not bands.
# A clip takes the mildest level that fits the budget, so only heavy clips pay more. Later gifsicle releases
# rescaled the option (1.96 needs about 100 where 1.93 needs 5); the search absorbs that too.
LOSSY_LEVELS = (5, 10, 20, 30, 40, 60, 80, 120, 160, 240)
# The largest clip of a pair page must load in 1 s at 20 Mbit/s: 2.5 MB. Clips of a prompt are served at the
# longest one's frame lengths (app/web/media.py), which can sum a little above any one clip's size.
SIZE_BUDGET_BYTES = 2_400_000
GIFSICLE_TIMEOUT_S = 120


class GifEncoderError(RuntimeError):
    """gifsicle failed or hung; the message says how."""


def encode_gif(frames: list[Image.Image], *, fps: float) -> bytes:
    """An endlessly looping GIF, one adaptive palette per frame, squeezed under ``SIZE_BUDGET_BYTES`` if it can be.

    Frames are copied into fresh images so that no ``info`` (comments, names) reaches the file: nothing in
    a clip may hint at the model that made it. Every clip gets the mildest lossy level; only a clip still
    over the budget gets a stronger one, so the page-load bar holds whatever the content.
    """
    return encode_gif_with_level(frames, fps=fps)[0]


def encode_gif_with_level(frames: list[Image.Image], *, fps: float) -> tuple[bytes, int | None]:
    """``encode_gif`` and the gifsicle ``--lossy`` level it used (``None``: Pillow's output, no lossy step).

    One clip alone, at the mildest level that fits it. The worker no longer serves this: it keeps the master
    (``encode_master``) and compresses it per pair (worker/pair_encoding.py), so that both clips of a pair get
    one level; this stays for tools that encode a single clip (bench/, the demo).
    """
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    master = encode_master(frames, fps=fps)
    level = fit_level(master)
    return (compress(master, level), level) if level else (master, None)


def encode_master(frames: list[Image.Image], *, fps: float) -> bytes:
    """The uncompressed master of a clip: Pillow's median-cut palette per frame, canonical layout, no lossy step.

    Stored (never served) with every generated clip: the served copy is derived from it once the clip's pair
    is complete, at the pair's level, and its PSNR is measured against it.
    """
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    return _pillow_gif(frames, fps=fps)


def fit_level(master: bytes) -> int:
    """The mildest of ``LOSSY_LEVELS`` at which ``master`` fits ``SIZE_BUDGET_BYTES`` (the strongest if none does).

    0 means no lossy step: gifsicle is missing, or lossy LZW makes this content no smaller than the master
    (flat, mostly static content such as the demo renderer's).
    """
    if _gifsicle_binary() is None:
        return 0
    level, out = _mildest_fit_level(lambda lv: compress(master, lv))
    return level if len(out) < len(master) else 0


def compress(master: bytes, level: int) -> bytes:
    """``master`` through gifsicle ``--lossy=level``, one part per core, back in the canonical layout (sorted
    colour tables; ``served_copy`` shuffles them). Level 0 is the master itself."""
    if level == 0:
        return master
    gifsicle = _gifsicle_binary()
    if gifsicle is None:
        raise GifEncoderError(f"gifsicle is needed for lossy level {level} (apt-get install gifsicle)")
    n_frames = len(canonical.frame_data_lengths(master))  # also checks the master's layout
    w, h = (int.from_bytes(master[i:i + 2], "little") for i in (6, 8))
    n_parts = max(1, min(_cores(n_frames), (w * h * n_frames) // MIN_PART_PIXELS))
    parts = canonical.split(master, n_parts)
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        return canonical.join(list(pool.map(
            lambda part: canonical.canonicalize(_gifsicle(gifsicle, part, level), shuffle=False), parts)))


def served_copy(master: bytes, level: int) -> bytes:
    """What evaluators get: ``master`` at ``level``, written again with keyed colour orders like every stored
    clip (app/media/canonical.py), so neither the level nor gifsicle's stream reaches an evaluator."""
    return canonical.canonicalize(compress(master, level))


def _gifsicle_binary() -> str | None:
    binary = shutil.which("gifsicle")
    if binary is None:
        # The demo needs nothing but Python; the Docker images and CI install gifsicle.
        log.warning("gifsicle is not installed (apt-get install gifsicle): GIFs are written without lossy "
                    "compression, and 512x512 clips will be too large for the pair page")
    return binary


# A part is worth a thread and a gifsicle process from about one 512x512 frame up; tiny clips stay whole.
MIN_PART_PIXELS = 512 * 512


def _cores(n_frames: int) -> int:
    return max(1, min(n_frames, os.cpu_count() or 1))


def _parts(frames: list[Image.Image]) -> int:
    pixels = sum(f.width * f.height for f in frames)
    return max(1, min(_cores(len(frames)), pixels // MIN_PART_PIXELS))


def _pillow_gif(frames: list[Image.Image], *, fps: float) -> bytes:
    """The clip with Pillow's palettes, in the canonical layout, before any lossy step."""
    with ThreadPoolExecutor(max_workers=_cores(len(frames))) as pool:
        return canonical.join(_pillow_parts(frames, fps=fps, pool=pool))


def _pillow_parts(frames: list[Image.Image], *, fps: float, pool: ThreadPoolExecutor) -> list[bytes]:
    """The clip as one canonical GIF per core, of consecutive frames, joined later (``canonical.join``).

    Median cut, LZW and gifsicle are single-threaded; in parts they use every core. On the H100 machine's 16
    cores a whole-clip encode took 0.5-1.6 s of which only the median cut ran in parallel (bench.gpu_generation).
    Pillow and gifsicle release the GIL, so threads suffice.
    """
    paletted = list(pool.map(_quantise, frames))
    n = _parts(frames)
    bounds = [round(i * len(paletted) / n) for i in range(n + 1)]
    groups = [paletted[lo:hi] for lo, hi in itertools.pairwise(bounds) if hi > lo]
    return list(pool.map(lambda group: _save(group, fps=fps), groups))


def _save(paletted: list[Image.Image], *, fps: float) -> bytes:
    """Paletted frames as a canonical GIF: every frame whole, none merged (Pillow's writer merges repeats and
    crops frames to what changed, and a cropped frame over another palette's can show more than 256 colours).
    The palettes are sorted, so the same frames give the same bytes; the stored clip is shuffled later."""
    # Pillow wrote round(1000 / fps) ms as whole centiseconds, rounded down; the delay stays what it was.
    delay_ms = 10 * (round(1000 / fps) // 10)
    rgb = [np.asarray(p.convert("RGB")) for p in paletted]
    return canonical.encode(rgb, [delay_ms] * len(rgb), shuffle=False)


def _mildest_fit_level(encode_at: Callable[[int], bytes]) -> tuple[int, bytes]:
    """``encode_at`` the first of ``LOSSY_LEVELS`` whose output fits the budget, else at the last level.

    Most clips fit at the first level (one encode). For the rest the output shrinks as the level rises, so the
    levels are bisected, one encode at a time: each encode already runs its parts on every core.
    """
    outputs: dict[int, bytes] = {0: encode_at(LOSSY_LEVELS[0])}
    if len(outputs[0]) <= SIZE_BUDGET_BYTES:
        return LOSSY_LEVELS[0], outputs[0]
    # Invariant: level too_big does not fit; level fits does, or is the strongest there is.
    too_big, fits = 0, len(LOSSY_LEVELS) - 1
    while fits - too_big > 1:
        mid = (too_big + fits) // 2
        outputs[mid] = encode_at(LOSSY_LEVELS[mid])
        if len(outputs[mid]) <= SIZE_BUDGET_BYTES:
            fits = mid
        else:
            too_big = mid
    if fits not in outputs:
        outputs[fits] = encode_at(LOSSY_LEVELS[fits])
    return LOSSY_LEVELS[fits], outputs[fits]


def _quantise(frame: Image.Image) -> Image.Image:
    # Median cut is now most of the encode time. Tried and refused, on the six bench clips at 512: Pillow's
    # FASTOCTREE is 4-8x faster but bands the sky test (block error 7.0 against 1.25, 12 sky colours against
    # 42); a median-cut palette from a half-size frame, then mapping the full frame, is 4x faster but loses
    # 0.4-1 dB PSNR, and 11 dB on a clip with few colours. The Pillow wheels carry no libimagequant.
    clean = Image.frombytes("RGB", frame.size, frame.convert("RGB").tobytes())
    return clean.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)


def _gifsicle(binary: str, data: bytes, level: int) -> bytes:
    try:
        done = subprocess.run([binary, f"--lossy={level}"], input=data, capture_output=True, check=True,
                              timeout=GIFSICLE_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        raise GifEncoderError(f"gifsicle --lossy={level} failed: {exc.stderr.decode(errors='replace')}") from exc
    except subprocess.TimeoutExpired as exc:
        raise GifEncoderError(f"gifsicle --lossy={level} took over {GIFSICLE_TIMEOUT_S} s") from exc
    return done.stdout


def encode_clip_gif(frames: list[Image.Image], *, fps: float) -> tuple[bytes, GifInfo, int | None]:
    """``encode_gif``, then the canonical writer as for imported clips, then what the file really holds.

    Returns the bytes, their ``GifInfo`` and the lossy level used (see ``encode_gif_with_level``).
    GIF frame delays are whole hundredths of a second, so a requested fps is not always what plays: 8 fps is
    asked as 125 ms and Pillow writes 12 cs (8.33 fps). The clip row must record the file's rate, measured
    the way ``import-gifs`` measures it (``app.media.gif.inspect_gif``), or a study mixing generated and
    imported clips of the same settings would hold two fps values for one format. Writing the frames again
    with shuffled colour orders (``canonical.canonicalize``) gives the stored file the layout of every other
    stored clip, whatever ``encode_gif_with_level`` returned: nothing but pixels and timing reaches an evaluator.
    """
    encoded, level = encode_gif_with_level(frames, fps=fps)
    data = canonical.canonicalize(encoded)
    return data, inspect_gif(data), level
