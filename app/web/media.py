"""Serving clips to evaluators by opaque token, with nothing in the bytes or headers that names a model.

``GET /m/{media_token}``: the token is random per clip (``Clip.media_token``); the response carries no file
name, no Last-Modified (it would differ by pipeline timing), and an ETag keyed with the secret and the token,
so it is neither the clip's stored sha256 nor shared by two clips of the same pixels.

Every stored clip is in the canonical layout (``app.media.canonical``: imports, generated clips and
attention-check copies all go through it), so the bytes of two clips differ only in what their pixels make
them differ in, and in their lengths. The lengths are equalised here: every clip of the same prompt and seed
(each model's, and the check copies served beside them) is served with each frame's LZW stream grown, by clear
codes inside the image data, to the longest that frame is among them. Size, block layout and Content-Length
are then the same for every clip of a pair, with no padding block anyone could subtract.

The work is done once per group and cached: the first request for any clip of a prompt builds the served
bytes of all of them, so a clip and its rival cost the same to serve, whichever is asked first.

Where the clips are stored (a local folder or an S3 bucket, ``app.media.storage``) changes nothing here: the
web server reads the object and streams the served bytes itself, so no bucket name, object key, presigned URL
or provider header (``x-amz-*``, the store's ETag or Last-Modified) reaches the evaluator. A store that does
not answer gives 503 with Retry-After, never a 404 an evaluator's page would read as "no such clip". Byte
ranges (``Range: bytes=a-b``) are answered from the served bytes, the same for either store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from functools import lru_cache
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.media import canonical, poster, video
from app.media.storage import ObjectMissing, StorageError, StorageUnavailable, read_bytes
from app.models import Clip
from app.security import DbSession

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)

CACHE_SECONDS = 3600
# How long a browser should wait before asking again while the clip store does not answer.
STORE_RETRY_AFTER_SECONDS = 5
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

    No longer on the serving path (every served clip is written by ``app.media.canonical``, which keeps
    nothing but pixels and delays); kept for callers that want a file's own bytes without its metadata.

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


@lru_cache(maxsize=4096)
def _frame_lengths(storage_name: str, store: str) -> tuple[int, ...]:
    """Each frame's LZW stream length in the stored clip; stored files never change under a name."""
    return canonical.frame_data_lengths(_canonical_bytes(storage_name, store))


def _canonical_bytes(storage_name: str, store: str) -> bytes:
    data = read_bytes(storage_name, store)
    if canonical.is_canonical(data):
        return data
    # A file stored before every clip went through the canonical writer: written again on the fly (the keyed
    # colour orders make every process write the same bytes for it).
    return canonical.canonicalize(data)


@lru_cache(maxsize=64)
def _body(storage_name: str, store: str, targets: tuple[int, ...]) -> tuple[bytes, bytes]:
    """The clip grown to ``targets`` and the sha256 of the result."""
    body = canonical.pad_frames(_canonical_bytes(storage_name, store), targets)
    return body, hashlib.sha256(body).digest()


def _served(session: Session, clip: Clip) -> tuple[bytes, str]:
    """The clip's bytes at its group's frame lengths, and their ETag.

    File size is a side channel: a 4-step model's GIFs may be systematically smaller than a 25-step model's,
    and Content-Length (or loading time) would then tell the sides apart.
    """
    assert clip.storage_name is not None  # checked by the route
    siblings = session.execute(select(Clip.storage_name, Clip.storage).where(
        Clip.study_id == clip.study_id, Clip.prompt_id == clip.prompt_id, Clip.seed == clip.seed,
        Clip.status == "done", Clip.storage_name.is_not(None)).order_by(Clip.id)).all()
    own_key = (clip.storage_name, clip.storage)
    lengths: dict[tuple[str, str], tuple[int, ...]] = {own_key: _frame_lengths(*own_key)}
    for name, store in siblings:
        if name is None or (name, store) in lengths:
            continue
        try:
            lengths[name, store] = _frame_lengths(name, store)
        except (OSError, ValueError):
            # A sibling's broken or missing file is its own problem; it must not take this clip down. A store
            # that does not answer (StorageUnavailable) is not caught: served without a sibling's lengths, this
            # clip could differ in size from its rival, so the request answers 503 instead.
            continue
    targets = canonical.equal_targets(list(lengths.values()))
    for group_key, own in lengths.items():  # the whole group at once: no clip costs more than its rival
        try:
            _body(*group_key, targets[: len(own)])
        except (OSError, ValueError):
            continue
    body, digest = _body(*own_key, targets[: len(lengths[own_key])])
    key = get_settings().secret_key.encode()
    etag = hmac.new(key, b"etag:" + clip.media_token.encode() + b":" + digest, hashlib.sha256).hexdigest()[:32]
    return body, f'"{etag}"'


def media_format(storage_name: str) -> str:
    """gif, mp4 or webm, from the stored file's suffix (stored names are random hex + the format's suffix)."""
    suffix = storage_name.rsplit(".", 1)[-1].lower()
    return suffix if suffix in video.FORMATS else "gif"


@lru_cache(maxsize=4096)
def _sample_sizes(storage_name: str, store: str) -> tuple[int, ...]:
    return video.sample_sizes(read_bytes(storage_name, store))


@lru_cache(maxsize=64)
def _video_body(storage_name: str, store: str, fmt: str, targets: tuple[int, ...]) -> tuple[bytes, bytes]:
    body = video.pad_samples(read_bytes(storage_name, store), fmt, targets)
    return body, hashlib.sha256(body).digest()


def _served_video(session: Session, clip: Clip, fmt: str) -> tuple[bytes, str]:
    """An MP4/WebM clip with every frame grown, inside the codec stream, to the longest that frame is among the
    clips of its prompt and seed (app/media/video.py, ``pad_samples``): one size and one layout for the group,
    built for the whole group at once like the GIFs above."""
    assert clip.storage_name is not None
    siblings = session.execute(select(Clip.storage_name, Clip.storage).where(
        Clip.study_id == clip.study_id, Clip.prompt_id == clip.prompt_id, Clip.seed == clip.seed,
        Clip.status == "done", Clip.storage_name.is_not(None)).order_by(Clip.id)).all()
    own_key = (clip.storage_name, clip.storage)
    sizes: dict[tuple[str, str], tuple[int, ...]] = {own_key: _sample_sizes(*own_key)}
    for name, store in siblings:
        if name is None or (name, store) in sizes or media_format(name) != fmt:
            continue
        try:
            sizes[name, store] = _sample_sizes(name, store)
        except (OSError, ValueError):
            continue  # a sibling's broken file is its own problem (a store that does not answer: 503, as above)
    targets = video.padded_targets(fmt, list(sizes.values()))
    for group_key, own in sizes.items():
        try:
            _video_body(*group_key, fmt, targets[: len(own)])
        except (OSError, ValueError):
            continue
    body, digest = _video_body(*own_key, fmt, targets[: len(sizes[own_key])])
    key = get_settings().secret_key.encode()
    etag = hmac.new(key, b"etag:" + clip.media_token.encode() + b":" + digest, hashlib.sha256).hexdigest()[:32]
    return body, f'"{etag}"'


@lru_cache(maxsize=64)
def _poster_png(storage_name: str, store: str) -> bytes:
    """The clip's first frame as PNG before growing (app/media/poster.py); stored files never change."""
    fmt = media_format(storage_name)
    data = _canonical_bytes(storage_name, store) if fmt == "gif" else read_bytes(storage_name, store)
    return poster.png(poster.first_frame(data, fmt), palette=fmt == "gif")


@lru_cache(maxsize=4096)
def _poster_length(storage_name: str, store: str) -> int:
    return len(_poster_png(storage_name, store))


def _served_poster(session: Session, clip: Clip) -> tuple[bytes, str]:
    """The first frame as PNG, grown to the length every poster of its prompt and seed is served at.

    A poster per clip is a second file per clip, so the same side channel as the clips themselves: without
    this, the PNG of a 4-step model's smoother frame would be shorter than its rival's. Grown inside the
    deflate stream (no chunk to subtract), one layout for the group."""
    assert clip.storage_name is not None
    gif = media_format(clip.storage_name) == "gif"
    siblings = session.execute(select(Clip.storage_name, Clip.storage).where(
        Clip.study_id == clip.study_id, Clip.prompt_id == clip.prompt_id, Clip.seed == clip.seed,
        Clip.status == "done", Clip.storage_name.is_not(None)).order_by(Clip.id)).all()
    own_key = (clip.storage_name, clip.storage)
    lengths = {own_key: _poster_length(*own_key)}
    for name, store in siblings:
        if name is None or (name, store) in lengths or (media_format(name) == "gif") != gif:
            continue
        try:
            lengths[name, store] = _poster_length(name, store)
        except (OSError, ValueError):
            continue  # a sibling's broken file is its own problem (a store that does not answer: 503, as above)
    body = poster.pad_png(_poster_png(*own_key), poster.equal_target(list(lengths.values())))
    key = get_settings().secret_key.encode()
    digest = hashlib.sha256(body).digest()
    etag = hmac.new(key, b"poster:" + clip.media_token.encode() + b":" + digest, hashlib.sha256).hexdigest()[:32]
    return body, f'"{etag}"'


def _not_found() -> Response:
    return PlainTextResponse("Not found", status_code=404)


def _store_down() -> Response:
    return PlainTextResponse("The clip store is not answering; this page will try again shortly.", status_code=503,
                             headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS), "Cache-Control": "no-store"})


def _byte_range(header: str, size: int) -> tuple[int, int] | None | Literal[False]:
    """``(first, last)`` of a single ``bytes=`` range (RFC 9110 section 14.1.2), None to send the whole body (no
    or an unparseable header, or several ranges: allowed by section 14.2), False when it cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_s:  # suffix range: the last N bytes
            n = int(last_s)
            return (max(0, size - n), size - 1) if n > 0 and size else False
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size:
        return False
    if first < 0 or last < first:
        return None
    return first, min(last, size - 1)


def _serve(session: Session, clip: Clip, what: str) -> tuple[bytes, str] | Response:
    """The served bytes and ETag of a clip (``what`` = gif, mp4, webm) or of its poster, or the error response."""
    try:
        if what == "poster":
            return _served_poster(session, clip)
        return _served(session, clip) if what == "gif" else _served_video(session, clip, what)
    except StorageUnavailable as exc:
        log.warning("media for clip %s: %s", clip.id, exc)
        return _store_down()
    except StorageError as exc:
        if isinstance(exc, ObjectMissing):  # the store answered: this clip's object is gone (404 below)
            log.error("media for clip %s cannot be served (%s); re-import or regenerate it", clip.id, exc)
            return _not_found()
        # The operator's to fix (credentials, bucket); the evaluator gets the same 503 as for an outage.
        log.error("media for clip %s cannot be read: %s", clip.id, exc)
        return _store_down()
    except (OSError, ValueError) as exc:
        # Logged with the clip id for the operator; the evaluator only sees 404 (no hint about the clip).
        log.error("media for clip %s cannot be served (%s); re-import or regenerate it", clip.id, exc)
        return _not_found()


@router.get("/m/{media_token}/poster")
def media_poster(media_token: str, request: Request, session: DbSession) -> Response:
    """The clip's first frame (a lossless PNG at native size) for the pair page's first paint: the same
    headers as the clip, one length for every poster of a prompt (``_served_poster``)."""
    clip = session.scalar(select(Clip).where(Clip.media_token == media_token, Clip.status == "done"))
    if clip is None or not clip.storage_name:
        return _not_found()
    served = _serve(session, clip, "poster")
    if isinstance(served, Response):
        return served
    body, etag = served
    headers = {"Cache-Control": f"private, max-age={CACHE_SECONDS}", "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type="image/png", headers=headers)


@router.get("/m/{media_token}")
def media(media_token: str, request: Request, session: DbSession) -> Response:
    clip = session.scalar(select(Clip).where(Clip.media_token == media_token, Clip.status == "done"))
    if clip is None or not clip.storage_name:
        return _not_found()
    fmt = media_format(clip.storage_name)
    served = _serve(session, clip, fmt)
    if isinstance(served, Response):
        return served
    body, etag = served
    headers = {
        "Cache-Control": f"private, max-age={CACHE_SECONDS}",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "bytes",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    wanted = request.headers.get("range")
    mime = video.MIME.get(fmt, "image/gif")
    if wanted and request.headers.get("if-range", etag) == etag:
        span = _byte_range(wanted, len(body))
        if span is False:
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{len(body)}"})
        if span is not None:
            first, last = span
            return Response(content=body[first:last + 1], status_code=206, media_type=mime,
                            headers={**headers, "Content-Range": f"bytes {first}-{last}/{len(body)}"})
    return Response(content=body, media_type=mime, headers=headers)
