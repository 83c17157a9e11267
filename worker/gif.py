"""GIF encoding: frames in, bytes out, nothing in the file but pixels and timing."""

from __future__ import annotations

import io

from PIL import Image


def encode_gif(frames: list[Image.Image], *, fps: float) -> bytes:
    """An endlessly looping GIF with an adaptive palette per frame (what diffusers' export_to_gif does).

    Frames are copied into fresh images so that no ``info`` (comments, names) reaches the file: nothing in
    a clip may hint at the model that made it.
    """
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    clean = [Image.frombytes("RGB", f.size, f.convert("RGB").tobytes()) for f in frames]
    buf = io.BytesIO()
    clean[0].save(buf, format="GIF", save_all=True, append_images=clean[1:], duration=round(1000 / fps), loop=0,
                  optimize=False)
    return buf.getvalue()
