"""How much a lossy step changed a clip: PSNR of the served GIF against its uncompressed master.

The worker keeps every generated clip's master (Pillow's per-frame palettes, no lossy step) and serves a copy
compressed with gifsicle's lossy LZW at one level per pair (worker/pair_encoding.py). The PSNR recorded with
each clip is measured here, over every frame and colour channel as a browser composites them, against the
master's frames: it isolates the lossy step, since palette quantisation is the same for every clip.
"""

from __future__ import annotations

import math

import numpy as np

from app.media.canonical import CanonicalGifError, decode_video


def psnr_db(reference: bytes, encoded: bytes) -> float | None:
    """PSNR in dB of ``encoded`` against ``reference`` (two GIFs of one clip); None when the pixels are equal.

    Frames and sizes must match: the two files are the same clip before and after a lossy step.
    """
    ref, enc = decode_video(reference), decode_video(encoded)
    if len(ref.frames) != len(enc.frames) or ref.size != enc.size:
        raise CanonicalGifError(f"cannot compare {len(ref.frames)} frames of {ref.size} with "
                                f"{len(enc.frames)} frames of {enc.size}: not the same clip")
    total, count = 0.0, 0
    for a, b in zip(ref.frames, enc.frames, strict=True):
        diff = a.astype(np.int32) - b.astype(np.int32)
        total += float(np.square(diff, dtype=np.int64).sum())
        count += diff.size
    mse = total / count
    if mse == 0:
        return None
    return 10 * math.log10(255.0 ** 2 / mse)
