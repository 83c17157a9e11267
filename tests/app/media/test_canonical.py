"""The canonical writer: every pixel and delay kept, one layout for every clip, any length reached inside the
image data, and nothing it cannot keep accepted."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from app.media import canonical
from app.media.canonical import CanonicalGifError
from tests.app.media import anatomy
from tests.factories import gif_bytes

REAL_GIFS = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "animatediff_gifs"


def _rgba_frames(data: bytes) -> list[np.ndarray]:
    with Image.open(io.BytesIO(data)) as im:
        return [np.asarray(f.convert("RGBA")).copy() for f in ImageSequence.Iterator(im)]


def _durations(data: bytes) -> list[int]:
    with Image.open(io.BytesIO(data)) as im:
        return [f.info.get("duration") for f in ImageSequence.Iterator(im)]


def _independent_decode(data: bytes) -> list[np.ndarray]:
    """Frames as RGB through tests/app/media/anatomy.py's own LZW decoder (full-canvas frames only)."""
    gif = anatomy.parse(data)
    w, h = int.from_bytes(gif.header[6:8], "little"), int.from_bytes(gif.header[8:10], "little")
    out = []
    for frame in gif.frames:
        table = np.frombuffer(frame.local_table or gif.global_table, dtype=np.uint8).reshape(-1, 3)
        indices = np.frombuffer(anatomy.lzw_indices(frame.min_code_size, frame.stream), dtype=np.uint8)
        out.append(table[indices[: w * h]].reshape(h, w, 3))
    return out


def _rng_frames(n=4, size=(40, 32), colours=200, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    return [palette[rng.integers(0, colours, (size[1], size[0]))] for _ in range(n)]


def _sources() -> dict[str, bytes]:
    """GIFs as different encoders lay them out: global or local tables, cropped and transparent delta frames,
    metadata, mixed delays."""
    out = {"factory": gif_bytes(frames=5, size=(48, 40))}
    frames = [Image.fromarray(f) for f in _rng_frames()]
    buf = io.BytesIO()  # one adaptive palette per frame: local tables
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=[100, 120, 80, 100],
                   loop=3, comment=b"made by zz-model")
    out["local tables, comment, mixed delays"] = buf.getvalue()
    base = np.full((32, 32, 3), 30, np.uint8)
    moving = []
    for i in range(4):
        f = base.copy()
        f[4:12, i * 6:i * 6 + 8] = (220, 40, 40)
        moving.append(Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=8))
    buf = io.BytesIO()  # optimised: frames cropped to what changed, unchanged pixels transparent
    moving[0].save(buf, format="GIF", save_all=True, append_images=moving[1:], duration=125, loop=0, optimize=True,
                   disposal=1)
    out["cropped delta frames"] = buf.getvalue()
    return out


@pytest.mark.parametrize("name", list(_sources()))
def test_every_pixel_and_delay_is_kept(name):
    source = _sources()[name]
    out = canonical.canonicalize(source)
    assert [a.tolist() for a in _rgba_frames(out)] == [a.tolist() for a in _rgba_frames(source)]
    assert _durations(out) == _durations(source)
    # A decoder that is not Pillow's reads the same pixels.
    assert [a.tolist() for a in _independent_decode(out)] == [a[..., :3].tolist() for a in _rgba_frames(source)]


@pytest.mark.skipif(not REAL_GIFS.is_dir(), reason="../shared/data/animatediff_gifs is not on this machine")
def test_real_animatediff_gifs_keep_every_pixel():
    for path in sorted(REAL_GIFS.glob("adiff_compare_*.gif"))[:2] + sorted(REAL_GIFS.glob("adiff_v1_*.gif"))[:1]:
        source = path.read_bytes()
        out = canonical.canonicalize(source)
        shown, kept = _rgba_frames(source), _rgba_frames(out)
        assert len(shown) == len(kept) and all(np.array_equal(a, b) for a, b in zip(shown, kept, strict=True))
        # The gallery GIFs play 4 and 5 cs frames in a pattern of their exporter's: evened out, same total.
        before, after = _durations(source), _durations(out)
        assert sum(after) == sum(before) and max(abs(x - y) for x, y in zip(before, after, strict=True)) <= 10


def _layout(data: bytes) -> list:
    """Everything about the file but its frames' delays, colours and LZW streams."""
    gif = anatomy.parse(data)
    frames = [(f.gce[:4], f.gce[6:], f.descriptor, len(f.local_table), f.min_code_size,
               all(n == 255 for n in f.sub_blocks[:-1]), f.sub_blocks[-1] <= 255) for f in gif.frames]
    return [gif.header[:6], gif.header[10:], gif.global_table, gif.extensions, gif.after_trailer, frames]


def test_one_layout_for_every_source():
    layouts = {repr(_layout(canonical.canonicalize(s))[:5]) for s in _sources().values()}
    assert len(layouts) == 1  # header, no global table, the looping block only, nothing after the trailer
    for source in _sources().values():
        out = canonical.canonicalize(source)
        gif = anatomy.parse(out)
        assert gif.header[10] == 0x70 and gif.global_table == b""
        assert gif.extensions == [(0xFF, b"NETSCAPE2.0", 14)]  # "NETSCAPE2.0" + loop forever
        for frame in gif.frames:
            assert frame.gce[3] == 0x04  # leave in place, no transparency
            assert frame.descriptor[1:5] == b"\0\0\0\0" and frame.descriptor[5:9] == gif.header[6:10]
            assert frame.descriptor[9] == 0x87 and len(frame.local_table) == 768 and frame.min_code_size == 8
            used = set(anatomy.lzw_indices(8, frame.stream))
            assert used == set(range(len(used)))  # the colours come first ...
            assert frame.local_table[3 * len(used):] == bytes(768 - 3 * len(used))  # ... and nothing after them


@pytest.mark.parametrize("extra", [*range(0, 20), 254, 255, 256, 257, 510, 511, 512, 1000, 4097])
def test_growing_reaches_every_length_and_keeps_every_pixel(extra):
    out = canonical.canonicalize(_sources()["local tables, comment, mixed delays"])
    natural = canonical.frame_data_lengths(out)
    targets = [n + extra + 3 * i for i, n in enumerate(natural)]
    grown = canonical.pad_frames(out, targets)
    assert canonical.frame_data_lengths(grown) == tuple(targets)
    assert len(grown) == canonical.served_size(targets)
    assert canonical.is_canonical(grown)
    assert [a.tolist() for a in _rgba_frames(grown)] == [a.tolist() for a in _rgba_frames(out)]
    assert [a.tolist() for a in _independent_decode(grown)] == [a.tolist() for a in _independent_decode(out)]
    assert _layout(grown)[:5] == _layout(out)[:5]
    # The growth is clear codes ahead of the frame's own stream, never a block of its own.
    assert [anatomy.leading_clears(8, f.stream) > 1 for f in anatomy.parse(grown).frames] == [
        t - n > 1 for t, n in zip(targets, natural, strict=True)]


@pytest.mark.skipif(shutil.which("gifsicle") is None, reason="gifsicle is not installed")
def test_a_third_decoder_reads_grown_frames_alike():
    out = canonical.canonicalize(_sources()["factory"])
    grown = canonical.pad_frames(out, [n + 777 for n in canonical.frame_data_lengths(out)])
    # gifsicle decodes every frame and writes it again with its own encoder: the pixels must survive.
    rewritten = subprocess.run(["gifsicle", "-O0"], input=grown, capture_output=True, check=True).stdout
    assert [a.tolist() for a in _rgba_frames(rewritten)] == [a.tolist() for a in _rgba_frames(out)]


def test_growing_never_shrinks_and_needs_a_length_per_frame():
    out = canonical.canonicalize(gif_bytes())
    natural = canonical.frame_data_lengths(out)
    with pytest.raises(CanonicalGifError, match="needs"):
        canonical.pad_frames(out, [natural[0] - 1, *natural[1:]])
    with pytest.raises(CanonicalGifError, match="target lengths"):
        canonical.pad_frames(out, natural[:-1])
    with pytest.raises(CanonicalGifError, match="not a canonical GIF"):
        canonical.pad_frames(gif_bytes(), natural)


def test_same_frames_same_bytes_and_a_copy_differs_only_in_its_colour_orders():
    source = _sources()["local tables, comment, mixed delays"]
    clip, again = canonical.canonicalize(source), canonical.canonicalize(source)
    copy = canonical.canonicalize(clip, role="duplicate")
    assert clip == again  # a generated clip is reproducible
    assert copy != clip and len(copy) == len(clip)
    assert canonical.frame_data_lengths(copy) == canonical.frame_data_lengths(clip)
    assert _layout(copy)[:5] == _layout(clip)[:5]
    assert [a.tolist() for a in _rgba_frames(copy)] == [a.tolist() for a in _rgba_frames(clip)]
    # No frame's bytes repeat between the clip and its copy, nor within a clip of repeated frames.
    assert not {f.stream for f in anatomy.parse(clip).frames} & {f.stream for f in anatomy.parse(copy).frames}
    still = _rng_frames(n=1)[0]
    frozen = canonical.encode([still] * 4, [100] * 4)
    assert len({f.local_table for f in anatomy.parse(frozen).frames}) == 4
    # The colour order does not change LZW's length: the lengths are the pixels' own.
    assert canonical.frame_data_lengths(frozen) == canonical.frame_data_lengths(
        canonical.encode([still] * 4, [100] * 4, shuffle=False))


def test_the_colour_orders_are_keyed_with_the_secret(monkeypatch):
    from app import config

    source = gif_bytes(frames=3)
    before = canonical.canonicalize(source)
    monkeypatch.setenv("BLINDPAIR_SECRET_KEY", "another-secret-that-is-long-enough-0123456789abcdef")
    config.get_settings.cache_clear()
    after = canonical.canonicalize(source)
    assert after != before and len(after) == len(before)


def _transparent_gif() -> bytes:
    frames = []
    for i in range(2):
        im = Image.new("P", (16, 16), 0)
        im.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
        im.paste(1, (i * 4, 0, i * 4 + 4, 4))
        frames.append(im)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], transparency=0, duration=100,
                   disposal=2)
    return buf.getvalue()


def _overlaid_palettes_gif() -> bytes:
    """Two frames, the second a half-canvas image over the first with 200 colours of its own: 400 on screen."""
    a, b = _rng_frames(n=2, size=(32, 32), colours=200, seed=1)
    b = (b // 2 + 1).astype(np.uint8)  # colours the first frame does not have
    first = Image.fromarray(a).quantize(256, method=Image.Quantize.MAXCOVERAGE)
    second = Image.fromarray(b[:, :16].copy()).quantize(256, method=Image.Quantize.MAXCOVERAGE)
    data = bytearray(b"GIF89a" + (32).to_bytes(2, "little") * 2 + b"\x70\0\0")
    for image, x in ((first, 0), (second, 16)):
        table = bytes(image.getpalette()[:768]).ljust(768, b"\0")
        stream = image.tobytes("gif", "P", 8, 0)
        w, h = image.size
        data += b"\x21\xf9\x04\x04\x0a\0\0\0"
        data += b"\x2c" + x.to_bytes(2, "little") + b"\0\0" + w.to_bytes(2, "little") + h.to_bytes(2, "little")
        data += b"\x87" + table + b"\x08" + stream + b"\0"
    return bytes(data + b"\x3b")


def test_what_cannot_be_kept_is_refused_with_what_to_do():
    with pytest.raises(CanonicalGifError, match="transparent pixels.*flatten"):
        canonical.canonicalize(_transparent_gif())
    shown = _rgba_frames(_overlaid_palettes_gif())[1]
    assert len({tuple(p) for p in shown.reshape(-1, 4)}) > 256  # the test file does what it says
    with pytest.raises(CanonicalGifError, match="more than 256 colours.*one full frame per image"):
        canonical.canonicalize(_overlaid_palettes_gif())
    with pytest.raises(CanonicalGifError, match="cannot be decoded"):
        canonical.canonicalize(b"GIF89a not really")
    with pytest.raises(CanonicalGifError, match="one delay per frame"):
        canonical.encode(_rng_frames(n=2), [100])


def test_parts_join_into_the_whole():
    frames = _rng_frames(n=5)
    whole = canonical.encode(frames, [100] * 5, shuffle=False)
    parts = [canonical.encode(frames[:2], [100] * 2, shuffle=False), canonical.encode(frames[2:], [100] * 3,
                                                                                     shuffle=False)]
    assert canonical.join(parts) == whole
    with pytest.raises(CanonicalGifError, match="canvas size"):
        canonical.join([parts[0], canonical.encode(_rng_frames(n=2, size=(8, 8)), [100] * 2)])


def test_targets_are_the_longest_frame_among_the_clips():
    assert canonical.equal_targets([(5, 9, 2), (7, 3, 2), (1, 1)]) == (7, 9, 2)
    assert canonical.equal_targets([]) == ()


def test_one_centisecond_jitter_in_delays_is_evened_out_by_one_rule():
    """Exporters write 8 fps as 12/13 cs in patterns of their own, a mark of the tool and nothing a viewer sees;
    a held frame is timing, and stays."""
    frames = _rng_frames(n=4)
    a = canonical.encode(frames, [120, 130, 120, 130])
    b = canonical.encode(frames, [130, 120, 120, 130])
    assert [f.delay_cs for f in anatomy.parse(a).frames] == [f.delay_cs for f in anatomy.parse(b).frames]
    assert sum(f.delay_cs for f in anatomy.parse(a).frames) == 50
    held = canonical.encode(frames, [100, 100, 100, 400])
    assert [f.delay_cs for f in anatomy.parse(held).frames] == [10, 10, 10, 40]


def test_same_video_looks_at_frames_and_timing_not_bytes():
    frames = _rng_frames(n=4)
    jittered = canonical.encode(frames, [120, 130, 120, 130], shuffle=False)
    assert canonical.same_video(canonical.canonicalize(jittered), canonical.canonicalize(jittered, role="duplicate"))
    buf = io.BytesIO()  # a file as an exporter wrote it, jitter and all, against what is stored of it
    images = [Image.fromarray(f) for f in frames]
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=[130, 120, 120, 130])
    assert canonical.same_video(buf.getvalue(), canonical.canonicalize(buf.getvalue()))
    assert not canonical.same_video(jittered, canonical.encode(frames, [100, 100, 100, 400]))
    assert not canonical.same_video(jittered, canonical.encode(frames[::-1], [120, 130, 120, 130]))
