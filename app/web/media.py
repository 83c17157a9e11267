"""Serving clips to evaluators by opaque token, with nothing in the bytes or headers that names a model.

``GET /m/{media_token}``: the token is random per clip (``Clip.media_token``); the response carries no file
name, no Last-Modified (it would differ by pipeline timing), and an ETag keyed with the secret so it is not
the clip's stored sha256. The GIF is served with its comment, XMP and other application blocks removed,
and padded to the size of the largest clip of the same prompt and seed, so that file size cannot tell the
models apart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from functools import lru_cache

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy import select

from app.config import get_settings
from app.media.storage import media_path
from app.models import Clip
from app.security import DbSession

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)

CACHE_SECONDS = 3600
# Application extensions browsers need for looping; everything else (XMP, ICC, encoder tags) is dropped.
KEPT_APPLICATIONS = {b"NETSCAPE2.0", b"ANIMEXTS1.0"}


class GifFormatError(ValueError):
    pass


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while True:
        if pos >= len(data):
            raise GifFormatError("truncated data sub-blocks")
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def strip_gif_metadata(data: bytes) -> bytes:
    """The same GIF, frame for frame and byte for byte in its image data, without comment/XMP/text blocks.

    Re-encoding with Pillow would also drop metadata but re-quantises palettes and can merge identical
    frames, so evaluators would see different pixels from the ones imported; walking the block structure
    (GIF89a spec, https://www.w3.org/Graphics/GIF/spec-gif89a.txt, sections 17-27) keeps them exact.
    """
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise GifFormatError("not a GIF file")
    packed = data[10]
    pos = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
    out = bytearray(data[:pos])
    while True:
        if pos >= len(data):
            raise GifFormatError("missing trailer")
        marker = data[pos]
        if marker == 0x3B:  # trailer
            out.append(0x3B)
            return bytes(out)
        if marker == 0x2C:  # image descriptor, optional local colour table, LZW code size, image data
            if pos + 10 > len(data):
                raise GifFormatError("truncated image descriptor")
            local = data[pos + 9]
            end = pos + 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0) + 1
            end = _skip_sub_blocks(data, end)
            out += data[pos:end]
            pos = end
        elif marker == 0x21:  # extension
            if pos + 2 > len(data):
                raise GifFormatError("truncated extension")
            label = data[pos + 1]
            end = _skip_sub_blocks(data, pos + 2)
            keep = label == 0xF9 or (label == 0xFF and data[pos + 3:pos + 14] in KEPT_APPLICATIONS)
            if keep:
                out += data[pos:end]
            pos = end
        else:
            raise GifFormatError(f"unexpected block 0x{marker:02x} at byte {pos}")


# Every served clip grows by at least this much, so any shortfall can be filled with a valid comment block.
PAD_MARGIN = 8


def pad_gif(data: bytes, size: int) -> bytes:
    """The same GIF grown to exactly ``size`` bytes by an all-zero comment block just before the trailer.

    Decoders ignore comment extensions, and zeros carry nothing. ``size - len(data)`` must be 3 or at
    least 5 (a comment is 2 introducer bytes, sub-blocks of a length byte plus 1-255 bytes, and a 0 end).
    """
    extra = size - len(data)
    if extra == 0:
        return data
    if extra < 3 or extra == 4 or data[-1:] != b"\x3b":
        raise GifFormatError(f"cannot pad a GIF by {extra} bytes")
    room = extra - 3  # bytes for sub-blocks, each 1 length byte + 1..255 data bytes
    blocks = bytearray()
    while room:
        take = min(256, room)
        if room - take == 1:  # never leave a lone byte: it could only be an empty (terminating) block
            take -= 1
        blocks += bytes([take - 1]) + bytes(take - 1)
        room -= take
    return data[:-1] + b"\x21\xfe" + bytes(blocks) + b"\x00\x3b"


@lru_cache(maxsize=64)
def _stripped(storage_name: str) -> bytes:
    """Sanitised bytes; stored files never change under a name, so caching by name is safe."""
    return strip_gif_metadata(media_path(storage_name).read_bytes())


def _served(session, clip: Clip) -> tuple[bytes, str]:
    """The clip's bytes, padded to the size of the largest clip shown beside it, and their ETag.

    File size is a side channel: a 4-step model's GIFs may be systematically smaller than a 25-step
    model's, and Content-Length (or loading time) would then tell the sides apart. Every clip of the same
    prompt and seed (each model, and the attention-check copies) is served at one common size.
    """
    siblings = session.scalars(select(Clip.storage_name).where(
        Clip.study_id == clip.study_id, Clip.prompt_id == clip.prompt_id, Clip.seed == clip.seed,
        Clip.status == "done", Clip.storage_name.is_not(None))).all()
    sizes = []
    for name in siblings:
        try:
            sizes.append(len(_stripped(name)))
        except (OSError, ValueError):
            continue  # a sibling's broken file is its own problem; it must not take this clip down
    body = _stripped(clip.storage_name)
    body = pad_gif(body, max([len(body), *sizes]) + PAD_MARGIN)
    key = get_settings().secret_key.encode()
    etag = hmac.new(key, b"etag:" + hashlib.sha256(body).digest(), hashlib.sha256).hexdigest()[:32]
    return body, f'"{etag}"'


def _not_found() -> Response:
    return PlainTextResponse("Not found", status_code=404)


@router.get("/m/{media_token}")
def media(media_token: str, request: Request, session: DbSession) -> Response:
    clip = session.scalar(select(Clip).where(Clip.media_token == media_token, Clip.status == "done"))
    if clip is None or not clip.storage_name:
        return _not_found()
    try:
        body, etag = _served(session, clip)
    except (OSError, ValueError) as exc:
        # Logged with the clip id for the operator; the evaluator only sees 404 (no hint about the clip).
        log.error("media for clip %s cannot be served (%s); re-import or regenerate it", clip.id, exc)
        return _not_found()
    headers = {
        "Cache-Control": f"private, max-age={CACHE_SECONDS}",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type="image/gif", headers=headers)
