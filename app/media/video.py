"""MP4 (H.264) and WebM (VP9) clips: a budget read from the container headers, decoding, one canonical encoder,
and per-frame size equalisation for serving.

Library: PyAV (``av``), whose wheels bring FFmpeg with libx264 and libvpx, so nothing is installed beside
pip. imageio with its ffmpeg plugin was the alternative: it pipes raw frames to an ``ffmpeg`` binary
(imageio-ffmpeg ships one), which cannot hand us single packets, so neither the SEI strip nor the in-stream
padding below could be done without a second parser; PyAV gives packets, codec options and muxer flags
directly. Where PyAV fell short: ``av.open`` runs ``avformat_find_stream_info``, which may decode a frame to
learn the stream's parameters, so the budget is checked by walking the MP4 boxes / Matroska elements here,
before PyAV sees the bytes (as ``app.media.budget`` does for GIF).

Blinding (the same rules as ``app.media.canonical`` for GIF). Every stored video is decoded to RGB frames and
written again by ``encode`` with one fixed set of encoder settings (``ENCODERS``), so what an evaluator's
browser receives depends on the pixels and the study's format only:

- container: FFmpeg's muxer in bitexact mode (no ``Lavf<version>`` writing app, no creation time, fixed
  track ids and handler name ``VideoHandler`` for every clip), moov before mdat (``faststart``);
- stream: x264's SEI with its version and options is removed from the first frame (the clips manifest
  keeps the encoder version; the served bytes do not need it); VP9 frames carry no version string;
- sizes: ``pad_samples`` grows every frame (sample) of every clip of a prompt to the longest that frame is
  among them, *inside the codec stream* (an H.264 filler-data NAL unit, type 12, which decoders skip by
  the standard's definition, ITU-T H.264 section 7.3.2.7; trailing zero bytes after a VP9 frame, which
  libvpx and FFmpeg skip as "suboptimal termination" between frames). So the MP4 sample-size table, the
  Matroska block sizes and Content-Length are identical for the clips of a pair, and no separable padding
  box is there to subtract. As with GIF's clear codes, a parser can still read how long each frame's own
  data is: a function of the pixels the clip shows.
"""

from __future__ import annotations

import io
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from app.config import Settings, get_settings

FORMATS = ("mp4", "webm")
CLIP_FORMATS = ("gif", *FORMATS)
MIME = {"gif": "image/gif", "mp4": "video/mp4", "webm": "video/webm"}

# One set of settings per format, for every model of every study: high fixed quality (constant rate factor,
# not a bitrate, so a model's content cannot starve or flood the rate control), no B-frames (decode order =
# display order: frame stepping in the browser lands on the frame asked for), a keyframe every KEYINT frames
# and never elsewhere (an encoder's own scene-cut keyframes follow the content: the MP4 sync-sample table and
# the WebM cues would grow by one entry per cut, a size and layout that differs by model; a scrambled
# attention-check copy was 4 bytes longer than its clip), one thread (x264 and libvpx output depends on the
# thread count; one gives the same bytes on every machine).
KEYINT = 8
ENCODERS: dict[str, dict[str, object]] = {
    "mp4": {"codec": "libx264", "pix_fmt": "yuv420p",
            "options": {"crf": "16", "preset": "medium", "bf": "0", "threads": "1", "profile": "high",
                        "x264-params": f"keyint={KEYINT}:min-keyint={KEYINT}:scenecut=0:open-gop=0"},
            "muxer": {"movflags": "+faststart"}},
    "webm": {"codec": "libvpx-vp9", "pix_fmt": "yuv420p",
             "options": {"crf": "20", "b": "0", "threads": "1", "row-mt": "0", "deadline": "good",
                         "cpu-used": "2", "lag-in-frames": "0", "auto-alt-ref": "0", "g": str(KEYINT),
                         "keyint_min": str(KEYINT)},
             "muxer": {}},
}
H264_FILLER_MIN = 6  # 4-byte length, NAL header 0x0C, rbsp trailing bits 0x80
_H264_SEI = 6
_H264_FILLER = 12


class VideoError(ValueError):
    """A video that cannot be taken; the message says why and what to do."""


class VideoBudgetError(VideoError):
    """Refused from its headers, before decoding; the message names the limit and its setting."""


@dataclass(frozen=True)
class VideoHeader:
    """What the container headers claim."""

    container: str  # mp4 | webm
    codec: str  # avc1, V_VP9, ...
    width: int
    height: int
    duration_s: float
    frames: int  # the MP4 sample count; the WebM blocks

    def describe(self) -> str:
        return f"{self.width}x{self.height}, {self.frames} frame(s), {self.duration_s:.2f} s"


@dataclass(frozen=True)
class DecodedVideo:
    frames: tuple[np.ndarray, ...]  # RGB uint8, H x W x 3
    fps: float
    codec: str

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


def sniff(data: bytes) -> str | None:
    """The container of ``data`` from its first bytes: gif, mp4, webm, or None."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


# --- the budget, from the headers ------------------------------------------------------------------------


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """The (type, payload start, end) of the ISO-BMFF boxes between ``start`` and ``end``."""
    out = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        head = 8
        if size == 1:
            if pos + 16 > end:
                raise VideoBudgetError("the MP4 is truncated inside a box header")
            size, head = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise VideoBudgetError(f"the MP4's {kind.decode('latin-1')!r} box runs past the file: it is damaged "
                                   "or truncated")
        out.append((kind, pos + head, pos + size))
        pos += size
    return out


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, s, e in _boxes(data, start, end):
        if k == kind:
            return s, e
    return None


def _mp4_header(data: bytes) -> VideoHeader:
    moov = _child(data, 0, len(data), b"moov")
    if moov is None:
        raise VideoBudgetError("the MP4 has no 'moov' box (no track headers); export it again as a complete file")
    videos = []
    for kind, s, e in _boxes(data, *moov):
        if kind != b"trak":
            continue
        mdia = _child(data, s, e, b"mdia")
        hdlr = mdia and _child(data, *mdia, b"hdlr")
        if not mdia or not hdlr or data[hdlr[0] + 8:hdlr[0] + 12] != b"vide":
            continue
        mdhd, minf = _child(data, *mdia, b"mdhd"), _child(data, *mdia, b"minf")
        stbl = minf and _child(data, *minf, b"stbl")
        stsd = stbl and _child(data, *stbl, b"stsd")
        stsz = stbl and _child(data, *stbl, b"stsz")
        if not (mdhd and stsd and stsz):
            raise VideoBudgetError("the MP4's video track lacks its sample tables; export it again")
        version = data[mdhd[0]]
        if version == 1:
            timescale, duration = struct.unpack(">IQ", data[mdhd[0] + 20:mdhd[0] + 32])
        else:
            timescale, duration = struct.unpack(">II", data[mdhd[0] + 12:mdhd[0] + 20])
        entry = stsd[0] + 8  # version/flags, entry count, then the first sample entry
        codec = data[entry + 4:entry + 8].decode("latin-1")
        width, height = struct.unpack(">HH", data[entry + 32:entry + 36])
        frames = struct.unpack(">I", data[stsz[0] + 8:stsz[0] + 12])[0]
        videos.append(VideoHeader("mp4", codec, width, height, duration / timescale if timescale else 0.0, frames))
    if len(videos) != 1:
        raise VideoBudgetError(f"the MP4 has {len(videos)} video tracks; a clip has exactly one")
    return videos[0]


def _vint(data: bytes, pos: int, *, strip: bool) -> tuple[int, int]:
    """An EBML variable-length integer at ``pos``: (value, length). ``strip``: drop the length marker (sizes)."""
    if pos >= len(data):
        raise VideoBudgetError("the WebM is truncated inside an element header")
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8 or pos + length > len(data):
        raise VideoBudgetError("the WebM has a damaged element header")
    value = first & ((0x80 >> (length - 1)) - 1) if strip else first
    for b in data[pos + 1:pos + length]:
        value = (value << 8) | b
    return value, length


def _elements(data: bytes, start: int, end: int, *, clusters: bool = False) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        eid, n = _vint(data, pos, strip=False)
        size, m = _vint(data, pos + n, strip=True)
        payload = pos + n + m
        unknown = size == (1 << (7 * m)) - 1  # "unknown size" (live streams): runs to the parent's end
        stop = end if unknown else payload + size
        if stop > end:
            stop = end  # a truncated last element: the headers before it are still readable
        out.append((eid, payload, stop))
        if eid == 0x1F43B675 and not clusters:  # the first Cluster: every header is before it
            break
        pos = stop
    return out


def _uint(data: bytes, s: int, e: int) -> int:
    return int.from_bytes(data[s:e], "big")


def _webm_header(data: bytes) -> VideoHeader:
    top = _elements(data, 0, len(data))
    segment = next(((s, e) for i, s, e in top if i == 0x18538067), None)
    if segment is None:
        raise VideoBudgetError("the WebM has no Segment; export it again as a complete file")
    scale, duration, tracks = 1_000_000, None, []
    for eid, s, e in _elements(data, *segment):
        if eid == 0x1549A966:  # Info
            for iid, a, b in _elements(data, s, e):
                if iid == 0x2AD7B1:
                    scale = _uint(data, a, b)
                elif iid == 0x4489:
                    duration = struct.unpack(">f" if b - a == 4 else ">d", data[a:b])[0]
        elif eid == 0x1654AE6B:  # Tracks
            for tid, a, b in _elements(data, s, e):
                if tid != 0xAE:
                    continue
                fields = {fid: (x, y) for fid, x, y in _elements(data, a, b)}
                if 0x83 not in fields or _uint(data, *fields[0x83]) != 1:  # TrackType 1: video
                    continue
                codec = data[slice(*fields[0x86])].decode("latin-1") if 0x86 in fields else "?"
                video = {vid: (x, y) for vid, x, y in _elements(data, *fields[0xE0])} if 0xE0 in fields else {}
                if 0xB0 not in video or 0xBA not in video:
                    raise VideoBudgetError("the WebM's video track does not state its size")
                frame_ns = _uint(data, *fields[0x23E383]) if 0x23E383 in fields else 0
                tracks.append((codec, _uint(data, *video[0xB0]), _uint(data, *video[0xBA]), frame_ns))
    if len(tracks) != 1:
        raise VideoBudgetError(f"the WebM has {len(tracks)} video tracks; a clip has exactly one")
    if duration is None:
        raise VideoBudgetError("the WebM does not state its duration in its headers, so its size cannot be "
                               "checked before decoding; export it again from a tool that writes a seekable file")
    codec, width, height, frame_ns = tracks[0]
    seconds = duration * scale / 1e9
    # The frame count is in no header: count the blocks of every cluster (their headers only, nothing decoded).
    frames = sum(1 for eid, s, e in _elements(data, *segment, clusters=True) if eid == 0x1F43B675
                 for bid, _a, _b in _elements(data, s, e) if bid in (0xA3, 0xA0))
    if frame_ns:
        seconds = max(seconds, frames * frame_ns / 1e9)
    return VideoHeader("webm", codec, width, height, seconds, frames)


def read_video_header(data: bytes) -> VideoHeader:
    kind = sniff(data)
    if kind == "mp4":
        return _mp4_header(data)
    if kind == "webm":
        return _webm_header(data)
    raise VideoBudgetError("not an MP4 or WebM file (unknown first bytes)")


def check_video_budget(data: bytes, settings: Settings | None = None) -> VideoHeader:
    """The headers of ``data`` if decoding it stays within the limits (the GIF ones, plus a duration); else
    ``VideoBudgetError``."""
    s = settings or get_settings()
    header = read_video_header(data)
    if max(header.width, header.height) > s.gif_max_side:
        raise VideoBudgetError(f"it is {header.width}x{header.height} pixels, over the {s.gif_max_side}-pixel "
                               "limit per side (BLINDPAIR_GIF_MAX_SIDE); refused before decoding. Export it smaller")
    if header.duration_s > s.video_max_seconds:
        raise VideoBudgetError(f"it lasts {header.duration_s:.1f} s, over the {s.video_max_seconds:g} s limit "
                               "(BLINDPAIR_VIDEO_MAX_SECONDS); refused before decoding. Export a shorter clip")
    frames = header.frames
    if frames > s.gif_max_frames:
        raise VideoBudgetError(f"it has {frames} frames, over the limit of {s.gif_max_frames} "
                               "(BLINDPAIR_GIF_MAX_FRAMES); refused before decoding. Export a shorter clip")
    if header.width * header.height * frames > s.gif_max_pixels:
        raise VideoBudgetError(f"{header.describe()} is {header.width * header.height * frames:,} pixels to decode, "
                               f"over the budget of {s.gif_max_pixels:,} (BLINDPAIR_GIF_MAX_PIXELS); refused "
                               "before decoding. Export fewer or smaller frames")
    return header


# --- decoding ---------------------------------------------------------------------------------------------


def decode(data: bytes, settings: Settings | None = None) -> DecodedVideo:
    """Every frame as RGB, after ``check_video_budget``; a frame larger than the headers said is refused too."""
    import av  # FFmpeg's libraries load only where videos are handled

    s = settings or get_settings()
    header = check_video_budget(data, s)
    frames: list[np.ndarray] = []
    try:
        # max_pixels: FFmpeg's own guard, for a stream whose codec headers claim more than the container's
        with av.open(io.BytesIO(data), "r", options={"max_pixels": str(s.gif_max_side ** 2)}) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            for frame in container.decode(stream):
                if (frame.width, frame.height) != (header.width, header.height):
                    raise VideoError(f"frame {len(frames) + 1} is {frame.width}x{frame.height}, but the headers say "
                                     f"{header.width}x{header.height}; the file is inconsistent, export it again")
                if len(frames) >= s.gif_max_frames:
                    raise VideoBudgetError(f"it has more than {s.gif_max_frames} frames (BLINDPAIR_GIF_MAX_FRAMES)")
                frames.append(frame.to_ndarray(format="rgb24"))
    except VideoError:
        raise
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise VideoError(f"cannot be decoded as a video ({exc})") from exc
    if not frames:
        raise VideoError("the video has no frames")
    fps = float(rate) if rate else (len(frames) / header.duration_s if header.duration_s else 0.0)
    if fps <= 0:
        raise VideoError("the video states no frame rate; export it again at a constant frame rate")
    return DecodedVideo(tuple(frames), round(fps, 3), header.codec)


# --- the canonical encoder ----------------------------------------------------------------------------------


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def encode(frames: Sequence[np.ndarray], fps: float, fmt: str) -> bytes:
    """``frames`` (RGB uint8, even sides) written with the study-wide settings of ``fmt``, finished canonically."""
    import av

    if fmt not in FORMATS:
        raise VideoError(f"unknown video format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not frames:
        raise VideoError("need at least one frame")
    h, w = frames[0].shape[:2]
    if w % 2 or h % 2:
        raise VideoError(f"{w}x{h}: H.264 and VP9 in 4:2:0 need even sides; crop or pad the frames by one pixel")
    cfg = ENCODERS[fmt]
    with _written(fmt) as (path, options), av.open(path, "w", format=fmt, container_options=options) as out:
        stream = out.add_stream(str(cfg["codec"]), rate=_rate(fps), options=dict(cfg["options"]))  # type: ignore[call-overload]
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = w, h, str(cfg["pix_fmt"])
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for number, frame in enumerate(frames, start=1):
            if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
                raise VideoError(f"frame {number} is {frame.shape} {frame.dtype}, expected ({h}, {w}, 3) uint8")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        out.close()
        data = Path(path).read_bytes()
    return _remux(data, fmt, lambda _i, payload: _strip_sei(payload) if fmt == "mp4" else payload)


def canonicalize(data: bytes, fmt: str) -> tuple[bytes, DecodedVideo]:
    """Any GIF, MP4 or WebM decoded and written again with ``fmt``'s study-wide settings."""
    decoded = decode_any(data)
    return encode(decoded.frames, decoded.fps, fmt), decoded


def decode_any(data: bytes) -> DecodedVideo:
    """Frames and rate of a GIF (as ``app.media.canonical`` composites it) or of an MP4/WebM."""
    if sniff(data) == "gif":
        from app.media import canonical

        video = canonical.decode_video(data)
        total_ms = sum(video.durations_ms) or 100 * len(video.frames)
        return DecodedVideo(video.frames, round(1000 * len(video.frames) / total_ms, 3), "gif")
    return decode(data)


def encoder_description(fmt: str) -> dict[str, str]:
    """What the clips manifest records: codec, encoder library and version, and the fixed settings."""
    import av

    cfg = ENCODERS[fmt]
    return {"container": fmt, "codec": "h264" if fmt == "mp4" else "vp9", "encoder": str(cfg["codec"]),
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])), "pyav": av.__version__,
            "settings": " ".join(f"{k}={v}" for k, v in dict(cfg["options"]).items())}  # type: ignore[call-overload]


# --- packets: reading sizes, stripping, padding --------------------------------------------------------------


def _packets(data: bytes) -> list[bytes]:
    import av

    with av.open(io.BytesIO(data), "r") as src:
        return [bytes(p) for p in src.demux(src.streams.video[0]) if p.size]


def _remux(data: bytes, fmt: str, transform: Callable[[int, bytes], bytes]) -> bytes:
    """The same stream in a fresh bitexact container, each packet's payload passed through ``transform``."""
    import av

    with _written(fmt) as (path, options), av.open(io.BytesIO(data), "r") as src, \
            av.open(path, "w", format=fmt, container_options=options) as dst:
        ins = src.streams.video[0]
        ost = dst.add_stream_from_template(ins)
        number = 0
        for packet in src.demux(ins):
            if not packet.size:
                continue
            new = av.Packet(transform(number, bytes(packet)))
            new.pts, new.dts, new.time_base = packet.pts, packet.dts, packet.time_base
            new.duration = packet.duration
            new.is_keyframe = packet.is_keyframe
            new.stream = ost
            dst.mux(new)
            number += 1
        dst.close()
        return Path(path).read_bytes()


@contextmanager
def _written(fmt: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A temporary file to mux into and the muxer options: MP4's faststart (moov before mdat, so a browser
    starts playing before the last byte) rewrites the file it wrote, which FFmpeg cannot do in memory."""
    with tempfile.TemporaryDirectory(prefix="blindpair-video-") as folder:
        options = {"fflags": "+bitexact", **{k: str(v) for k, v in dict(ENCODERS[fmt]["muxer"]).items()}}  # type: ignore[call-overload]
        yield str(Path(folder) / f"clip.{fmt}"), options


def _nal_units(payload: bytes) -> list[bytes]:
    """The NAL units of an MP4 H.264 sample (4-byte big-endian lengths, as FFmpeg's MP4 muxer writes them)."""
    units, pos = [], 0
    while pos + 4 <= len(payload):
        n = int.from_bytes(payload[pos:pos + 4], "big")
        units.append(payload[pos + 4:pos + 4 + n])
        pos += 4 + n
    return units


def _strip_sei(payload: bytes) -> bytes:
    return b"".join(len(u).to_bytes(4, "big") + u for u in _nal_units(payload) if u and u[0] & 0x1F != _H264_SEI)


def sample_sizes(data: bytes) -> tuple[int, ...]:
    """Every frame's payload length in a stored (canonical) video."""
    return tuple(len(p) for p in _packets(data))


def padded_targets(fmt: str, sizes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per frame, the length every clip of a group is served at: the longest, plus room for one filler NAL
    in MP4 (a filler cannot be shorter than ``H264_FILLER_MIN`` bytes, so every clip gets one)."""
    n = max((len(x) for x in sizes), default=0)
    extra = H264_FILLER_MIN if fmt == "mp4" else 0
    return tuple(max(x[i] for x in sizes if len(x) > i) + extra for i in range(n))


def pad_samples(data: bytes, fmt: str, targets: Sequence[int]) -> bytes:
    """``data`` with frame ``i`` grown inside the codec stream to exactly ``targets[i]`` bytes."""
    def grow(i: int, payload: bytes) -> bytes:
        if i >= len(targets):
            raise VideoError(f"{i + 1} frames for {len(targets)} target lengths")
        extra = targets[i] - len(payload)
        if extra == 0 and fmt == "webm":
            return payload
        if fmt == "mp4":
            if extra < H264_FILLER_MIN:
                raise VideoError(f"frame {i + 1} needs {len(payload)} bytes; {targets[i]} leaves no room for a filler")
            body = bytes([_H264_FILLER]) + b"\xff" * (extra - H264_FILLER_MIN) + b"\x80"
            return payload + len(body).to_bytes(4, "big") + body
        if extra < 0:
            raise VideoError(f"frame {i + 1} needs {len(payload)} bytes, more than the {targets[i]} asked")
        return payload + b"\0" * extra

    return _remux(data, fmt, grow)


# --- attention-check copies ---------------------------------------------------------------------------------


def duplicate_video(data: bytes, fmt: str) -> bytes:
    """The "same clip twice" copy: the stored clip decoded and encoded again with the same settings.

    Not the same bytes (identical responses would name the check without a look), and not pixel-identical
    either (a second lossy generation), but at the study's quality the difference is below what a rater can
    see: tests/app/media/test_video.py measures it. Layout and settings are the clip's exactly.
    """
    decoded = decode(data)
    return encode(decoded.frames, decoded.fps, fmt)


def degrade_video(data: bytes, fmt: str, variant: str, rng: object) -> bytes:
    """A degraded copy (``app.media.degrade``'s variants) encoded with the same settings as every clip."""
    import random

    from app.media.degrade import (
        MIN_MOTION_FOR_TEMPORAL,
        DecodedGif,
        DegradeError,
        _noisy,
        degrade_frames,
        motion_energy,
    )

    assert isinstance(rng, random.Random)
    decoded = decode(data)
    frames = list(decoded.frames)
    if variant in ("frozen", "scrambled") and motion_energy(frames) < MIN_MOTION_FOR_TEMPORAL:
        raise DegradeError(f"the clip barely moves, so a {variant} copy would not look worse; use 'noise'")
    if variant == "noise":
        # Noise in 8-pixel cells: per-pixel noise costs a video encoder several times a clip's bytes, and the
        # clips of a prompt are served at the longest one's frame sizes, so a fine-noise copy would make its
        # whole group slow to load; cells still look plainly noisy at any size a clip is shown.
        out = _noisy(frames, np.random.default_rng(rng.getrandbits(64)), cell=8)
    else:
        out = degrade_frames(DecodedGif(frames, [round(1000 / decoded.fps)] * len(frames)), variant, rng)
    return encode(out, decoded.fps, fmt)


def video_variants(data: bytes) -> tuple[str, ...]:
    """The degraded variants that are visibly worse than this video (temporal ones need motion)."""
    from app.media.degrade import MIN_MOTION_FOR_TEMPORAL, VARIANTS, motion_energy

    return VARIANTS if motion_energy(list(decode(data).frames)) >= MIN_MOTION_FOR_TEMPORAL else ("noise",)
