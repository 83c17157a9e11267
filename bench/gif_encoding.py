"""GIF encoding and serving: encode time, file size and fidelity per method for 16 frames at 512x512, and
the media route's response time with caching headers.

    python -m bench.gif_encoding             # full size (about a minute)
    python -m bench.gif_encoding --tiny      # 4 frames at 64x64, seconds

Frames are realistic, not flat colours: real AnimateDiff GIFs from ``../shared/data/animatediff_gifs``
(256x256, upscaled to 512 with Lanczos; skipped cleanly when the folder is absent; ``--real-limit`` of them,
spread evenly over the sorted names so that the compare, v1 gallery and v2 MotionLoRA sets all take part)
and the CPU demo renderer's frames (``app.media.demo_render``). Methods: the product's encoder
(``worker.gif.encode_gif``: Pillow, one adaptive palette per frame, then gifsicle's lossy LZW at the mildest
level that fits the size budget), the encoder before it (Pillow alone), Pillow with ``optimize=True``, one
global palette shared by all frames (with and without Floyd-Steinberg dithering, and with inter-frame
transparency), libimagequant per frame (PyPI ``imagequant``, optional) and gifsicle on the old encoder's
output (PyPI ``pygifsicle`` + the ``gifsicle`` binary, optional). Fidelity is measured on the decoded GIF
against the RGB frames: mean absolute error, PSNR, and distinct colours per frame against the original's.
Banding is measured on a synthetic sky (a smooth gradient over a busy, moving ground): the worst error of an
8x8 block's mean in the sky, which dithering or noise cannot hide and a band shows as. The pair page loads
two GIFs; at 20 Mbit/s that must take under 2 s.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import REPO_ROOT, Report, percentile, run_cli

SHARED_GIFS = REPO_ROOT.parent / "shared" / "data" / "animatediff_gifs"
LINK_BITS_PER_S = 20e6
FPS = 8


# ------------------------------------------------------------------------------------------------ frames


def real_clips(n_frames: int, size: int, limit: int, source: Path = SHARED_GIFS,
               keep: Callable[[Path], bool] | None = None) -> list[tuple[str, list[Image.Image]]]:
    """Up to ``limit`` real AnimateDiff GIFs from ``source`` (those ``keep`` accepts) as RGB frames at ``size``
    (looped if shorter); [] if the folder is absent."""
    if not source.is_dir():
        return []
    paths = [p for p in sorted(source.glob("*.gif")) if keep is None or keep(p)]
    out = []
    for path in paths[:: max(1, len(paths) // max(1, limit))][:limit]:
        with Image.open(path) as im:
            frames = []
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                # Fresh images: the source's info (its transparency, loop, comments) must not leak into encoders.
                rgb = im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
                frames.append(Image.fromarray(np.asarray(rgb)))
        out.append((path.name, [frames[i % len(frames)] for i in range(n_frames)]))
    return out


def lightning_gpu_seconds(path: Path) -> tuple[float, str] | None:
    """A Lightning clip's GPU time (UNet + VAE) and the GPU, from a saved bench.gpu_generation run, if any."""
    try:
        base = json.loads(path.read_text())["data"]["gpu_check"]
    except (OSError, KeyError, ValueError):
        return None
    light = base["presets"]["lightning"]
    return light["denoise_seconds"] + light["decode_seconds"], base["device"]


def demo_clips(n_frames: int, size: int) -> list[tuple[str, list[Image.Image]]]:
    from app.media.demo_render import render_clip

    prompt = "a lighthouse on a cliff at sunset, waves crashing, seagulls circling"
    return [(f"demo-{style}", render_clip(prompt, style=style, frames=n_frames, width=size, height=size))
            for style in ("smooth", "jittery")]


def sky_clip(n_frames: int, size: int) -> list[Image.Image]:
    """The banding test: a smooth sky gradient that brightens slowly, over a busy ground that pans, so the
    palette must serve both (as in a real landscape) and the sky gets few colours."""
    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, size)[:, None, None]
    sky = np.broadcast_to(np.array([40.0, 90, 170]) + np.array([210.0, 100, -30]) * y, (size, size, 3))
    ground = rng.integers(0, 256, (max(1, size // 8), max(1, size // 8), 3), dtype=np.uint8)
    ground = np.asarray(Image.fromarray(ground).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    frames = []
    for i in range(n_frames):
        img = sky + i * 0.3
        img[size // 2:] = 0.4 * img[size // 2:] + 0.6 * np.roll(ground, i * 3, axis=1)[size // 2:]
        frames.append(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)))
    return frames


def _block_means(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    return a.reshape(h // 8, 8, w // 8, 8, 3).mean(axis=(1, 3))


def band_error(original: list[Image.Image], data: bytes) -> dict[str, float]:
    """In the sky (top half): the worst error of an 8x8 block's mean, and distinct colours per frame."""
    errors, colours = [], []
    for f, d in zip(original, decode(data), strict=True):
        h, w = (d.shape[0] // 2) // 8 * 8, d.shape[1] // 8 * 8
        src = np.asarray(f.convert("RGB"), dtype=np.float64)[:h, :w]
        out = d[:h, :w].astype(np.float64)
        errors.append(float(np.abs(_block_means(out) - _block_means(src)).max()))
        colours.append(distinct_colours(d[: d.shape[0] // 2]))
    return {"band_error": max(errors), "sky_colours": float(np.mean(colours))}


# ----------------------------------------------------------------------------------------------- methods


def _save(frames: list[Image.Image], **kw) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / FPS), loop=0,
                   **kw)
    return buf.getvalue()


def product(frames: list[Image.Image]) -> bytes:
    from worker.gif import encode_gif

    return encode_gif(frames, fps=FPS)


def before(frames: list[Image.Image]) -> bytes:
    """The product's encoder until gifsicle joined it: Pillow's adaptive palette per frame, nothing else."""
    return _save([Image.frombytes("RGB", f.size, f.convert("RGB").tobytes()) for f in frames], optimize=False)


def pillow_optimize(frames: list[Image.Image]) -> bytes:
    return _save([f.convert("RGB") for f in frames], optimize=True)


def _global_palette(frames: list[Image.Image], colors: int = 256) -> Image.Image:
    # The palette is fitted on all frames at once (tiled side by side, downscaled to bound the cost).
    w, h = frames[0].size
    tile = Image.new("RGB", (w * len(frames), h))
    for i, f in enumerate(frames):
        tile.paste(f, (i * w, 0))
    tile = tile.resize((max(1, tile.width // 4), max(1, h // 4)), Image.Resampling.BILINEAR)
    return tile.quantize(colors, method=Image.Quantize.MEDIANCUT)


def global_palette(frames: list[Image.Image], dither: bool = True) -> bytes:
    pal = _global_palette(frames)
    mode = Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE
    return _save([f.quantize(palette=pal, dither=mode) for f in frames], optimize=False)


def global_palette_nodither(frames: list[Image.Image]) -> bytes:
    return global_palette(frames, dither=False)


def global_palette_transparency(frames: list[Image.Image], tolerance: int = 4) -> bytes:
    """Shared palette with dither, and a pixel whose source moved by at most ``tolerance`` since it was last
    drawn stays as shown (the transparent index): inter-frame transparency for LZW to compress."""
    pal = _global_palette(frames, colors=255)  # index 255 stays free for transparency
    ref = None
    out = []
    for f in frames:
        idx = np.asarray(f.quantize(palette=pal, dither=Image.Dither.FLOYDSTEINBERG)).copy()
        src = np.asarray(f.convert("RGB"), dtype=np.int16)
        if ref is None:
            ref = src
        else:
            keep = np.abs(src - ref).max(axis=2) <= tolerance
            idx[keep] = 255
            ref[~keep] = src[~keep]
        im = Image.fromarray(idx, "P")
        im.putpalette(pal.getpalette())
        out.append(im)
    return _save(out, optimize=False, transparency=255, disposal=1)


def imagequant_per_frame(frames: list[Image.Image]) -> bytes:
    import imagequant

    return _save([imagequant.quantize_pil_image(f.convert("RGBA"), dithering_level=1.0, max_colors=256).convert("RGB")
                  .convert("P", palette=Image.Palette.ADAPTIVE, colors=256) for f in frames], optimize=False)


def gifsicle_o3(frames: list[Image.Image]) -> bytes:
    """pygifsicle runs the gifsicle binary on a file; the old encoder's GIF goes in, -O3 comes out."""
    from pygifsicle import gifsicle

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.gif"
        src.write_bytes(before(frames))
        gifsicle(sources=[str(src)], destination=str(src), optimize=False, options=["-O3"])
        return src.read_bytes()


def gifsicle_lossy(frames: list[Image.Image]) -> bytes:
    from pygifsicle import gifsicle

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.gif"
        src.write_bytes(before(frames))
        gifsicle(sources=[str(src)], destination=str(src), optimize=False, options=["-O3", "--lossy=40"])
        return src.read_bytes()


def available_methods() -> tuple[list[tuple[str, Callable]], list[str]]:
    methods: list[tuple[str, Callable]] = [
        ("product: Pillow adaptive palette per frame + gifsicle lossy, mildest level under 2.4 MB "
         "(worker.gif.encode_gif)", product),
        ("before: Pillow adaptive palette per frame, no gifsicle", before),
        ("Pillow adaptive per frame + optimize=True", pillow_optimize),
        ("one global palette, Floyd-Steinberg dither", global_palette),
        ("one global palette, no dither", global_palette_nodither),
        ("one global palette, dither + inter-frame transparency (source moved <= 4)", global_palette_transparency),
    ]
    tried: list[str] = []
    if not shutil.which("gifsicle"):
        tried.append("the gifsicle binary is absent, so the product row is Pillow alone (`apt-get install gifsicle`)")
    try:
        import imagequant  # noqa: F401

        methods.append(("libimagequant per frame (PyPI imagequant)", imagequant_per_frame))
    except ImportError:
        tried.append("imagequant (libimagequant) not installed: `pip install imagequant` adds its row")
    try:
        import pygifsicle  # noqa: F401

        if shutil.which("gifsicle"):
            methods.append(("before + gifsicle -O3 (PyPI pygifsicle)", gifsicle_o3))
            methods.append(("before + gifsicle -O3 --lossy=40", gifsicle_lossy))
        else:
            tried.append("pygifsicle is installed but the gifsicle binary is not (`apt-get install gifsicle`)")
    except ImportError:
        tried.append("pygifsicle not installed: `pip install pygifsicle` + `apt-get install gifsicle` add its rows")
    return methods, tried


# ----------------------------------------------------------------------------------------------- quality


def decode(data: bytes) -> list[np.ndarray]:
    out = []
    with Image.open(io.BytesIO(data)) as im:
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB"), dtype=np.int16))
    return out


def distinct_colours(a: np.ndarray) -> int:
    flat = a.reshape(-1, 3).astype(np.int32)
    return int(np.unique(flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2]).size)


def fidelity(original: list[Image.Image], data: bytes) -> dict[str, float]:
    dec = decode(data)
    if len(dec) != len(original):
        return {"mae": math.nan, "mse": math.nan, "colours": math.nan, "frames_ok": 0.0}
    maes, mses, colours = [], [], []
    for f, d in zip(original, dec, strict=True):
        ref = np.asarray(f.convert("RGB"), dtype=np.int16)
        diff = (ref - d).astype(np.float64)
        maes.append(np.abs(diff).mean())
        mses.append((diff ** 2).mean())
        colours.append(distinct_colours(d))
    return {"mae": float(np.mean(maes)), "mse": float(np.mean(mses)), "colours": float(np.mean(colours)),
            "frames_ok": 1.0}


def psnr(mse: float) -> float | str:
    return 10 * math.log10(255 ** 2 / mse) if mse > 0 else "lossless"


# ----------------------------------------------------------------------------------------------- serving


def serving(gif: bytes, *, requests: int, tmp: Path) -> dict[str, Any]:
    """GET /m/{token} on the real server (200 and 304 with If-None-Match) against FileResponse on the floor app."""
    import httpx

    from app.db import Base, get_engine, session_scope
    from app.media.storage import store_bytes
    from app.models import Clip, Prompt, Study, StudyModel
    from bench.servers import uvicorn_server
    from bench.vote_path import configure

    env = configure(f"sqlite:///{tmp / 'media.sqlite'}", tmp / "data")
    Base.metadata.create_all(get_engine())
    with session_scope() as s:
        study = Study(slug="bench-media", name="media", status="open")
        s.add(study)
        s.flush()
        model = StudyModel(study_id=study.id, name="m", position=0)
        prompt = Prompt(study_id=study.id, external_id="p0", text="p", theme="t")
        s.add_all([model, prompt])
        s.flush()
        stored = store_bytes(gif)
        clip = Clip(study_id=study.id, model_id=model.id, prompt_id=prompt.id, status="done",
                    storage_name=stored.storage_name, sha256=stored.sha256, size_bytes=stored.size_bytes)
        s.add(clip)
        s.flush()
        token = clip.media_token
    floor_dir = tmp / "floor-media"
    floor_dir.mkdir()
    (floor_dir / "clip.gif").write_bytes(gif)
    env["BENCH_FLOOR_MEDIA_DIR"] = str(floor_dir)
    out: dict[str, Any] = {}
    for kind, factory, ping, path in (("app", "app.main:create_app", "/static/css/app.css", f"/m/{token}"),
                                      ("floor", "bench.floor_app:create_app", "/ping", "/media/clip.gif")):
        with uvicorn_server(factory, env, tmp / f"media-{kind}.log", ping=ping) as (base, _proc):
            with httpx.Client(base_url=base, timeout=30) as client:
                first = client.get(path)
                first.raise_for_status()
                etag = first.headers.get("etag")
                full, cond = [], []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    r = client.get(path)
                    full.append(time.perf_counter() - t0)
                    assert r.status_code == 200 and len(r.content) == len(first.content)
                    t0 = time.perf_counter()
                    r = client.get(path, headers={"If-None-Match": etag} if etag else {})
                    cond.append(time.perf_counter() - t0)
                out[kind] = {
                    "bytes": len(first.content), "etag": bool(etag),
                    "cache_control": first.headers.get("cache-control"), "status_if_none_match": r.status_code,
                    "p50_ms": percentile(full, 50) * 1000, "p99_ms": percentile(full, 99) * 1000,
                    "cond_p50_ms": percentile(cond, 50) * 1000, "cond_p99_ms": percentile(cond, 99) * 1000,
                }
    return out


# ----------------------------------------------------------------------------------------------- running


def run(args) -> Report:
    cmd = "python -m bench.gif_encoding" + (" --tiny" if args.tiny else "")
    report = Report("gif_encoding", f"GIF encoding and serving: {args.frames} frames at {args.size}x{args.size}",
                    cmd, params=dict(vars(args)))
    methods, tried = available_methods()
    clips = real_clips(args.frames, args.size, args.real_limit)
    if not clips:
        report.notes.append(f"Real AnimateDiff GIFs not found at {SHARED_GIFS}: only the demo renderer's frames.")
    sets = {"real AnimateDiff (upscaled)": clips, "demo renderer": demo_clips(args.frames, args.size)}
    raw_bytes = args.frames * args.size * args.size * 3
    results: dict[str, dict[str, list[dict]]] = {}
    for set_name, set_clips in sets.items():
        if not set_clips:
            continue
        for name, fn in methods:
            for clip_name, frames in set_clips:
                times = []
                data = b""
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    data = fn(frames)
                    times.append(time.perf_counter() - t0)
                q = fidelity(frames, data)
                results.setdefault(set_name, {}).setdefault(name, []).append(
                    {"clip": clip_name, "seconds": min(times), "bytes": len(data), **q})
            print(f"  {set_name} / {name}: done", flush=True)
    for set_name, by_method in results.items():
        rows = []
        orig_colours = np.mean([np.mean([distinct_colours(np.asarray(f.convert("RGB"))) for f in frames])
                                for _, frames in sets[set_name]])
        for name, recs in by_method.items():
            mean = {k: float(np.mean([r[k] for r in recs])) for k in ("seconds", "bytes", "mae", "mse", "colours")}
            pair_s = 2 * mean["bytes"] * 8 / LINK_BITS_PER_S
            rows.append([name, mean["seconds"], mean["bytes"] / 1e6, raw_bytes / mean["bytes"], pair_s, mean["mae"],
                         psnr(mean["mse"]), mean["colours"]])
        report.table(
            f"{set_name}: mean over {len(sets[set_name])} clip(s); raw RGB {raw_bytes / 1e6:.1f} MB per clip, "
            f"original {orig_colours:,.0f} distinct colours per frame",
            ["method", "encode s", "size MB", "raw / size", "pair page at 20 Mbit/s, s", "MAE (0-255)", "PSNR dB",
             "colours per frame"], rows)
    report.data["encoding"] = results
    sky = sky_clip(args.frames, args.size)
    banding = {name: {**band_error(sky, data), "bytes": len(data)} for name, fn in methods for data in [fn(sky)]}
    report.data["banding"] = banding
    report.table("banding test: synthetic sky gradient over a busy ground (bench.gif_encoding.sky_clip); a band "
                 "shows as a large error in an 8x8 block's mean, which dither and noise do not cause",
                 ["method", "sky: worst 8x8-block mean error (0-255)", "sky: colours per frame", "size MB"],
                 [[name, b["band_error"], b["sky_colours"], b["bytes"] / 1e6] for name, b in banding.items()])
    product_name = methods[0][0]
    prod = [r for recs in results.values() for r in recs.get(product_name, [])]
    worst_pair = max(2 * r["bytes"] * 8 / LINK_BITS_PER_S for r in prod)
    report.bar("pair page (two GIFs, product encoder) loads in < 2 s at 20 Mbit/s, largest clip",
               worst_pair < 2, f"{worst_pair:.2f} s")
    enc = max(r["seconds"] for r in prod)
    gpu = lightning_gpu_seconds(Path(args.results_dir) / "gpu_generation.json")
    if gpu is None:
        report.bar("encoding < 10% of a Lightning clip's GPU time", None,
                   f"encode {enc:.2f} s (worst clip); passes if the 4-step Lightning clip takes ≥ {10 * enc:.1f} s "
                   "on the GPU: no GPU run in the results folder (python -m bench.gpu_generation on a GPU)")
    else:
        seconds, device = gpu
        report.bar("encoding < 10% of a Lightning clip's GPU time", enc < 0.1 * seconds,
                   f"encode {enc:.2f} s (worst clip, on this machine's {os.cpu_count()} cores) against "
                   f"{seconds:.3g} s of GPU time per clip on the {device} (bench.gpu_generation's saved run)")
    report.data["encode_seconds_worst"] = enc
    if tried:
        report.notes += [f"Not measured: {t}." for t in tried]
    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-gif-"))
    try:
        sample = sets["real AnimateDiff (upscaled)"] or sets["demo renderer"]
        gif = product(sample[0][1])
        srv = serving(gif, requests=args.requests, tmp=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.data["serving"] = srv
    app, floor = srv["app"], srv["floor"]
    report.table(f"Media response time over loopback, {args.requests} sequential requests of a "
                 f"{app['bytes'] / 1e6:.2f} MB GIF (keep-alive)",
                 ["server", "200 p50 ms", "200 p99 ms", "304 (If-None-Match) p50 ms", "304 p99 ms", "ETag",
                  "Cache-Control", "status with If-None-Match"],
                 [["BlindPair /m/{token}", app["p50_ms"], app["p99_ms"], app["cond_p50_ms"], app["cond_p99_ms"],
                   app["etag"], app["cache_control"], app["status_if_none_match"]],
                  ["floor: Starlette FileResponse", floor["p50_ms"], floor["p99_ms"], floor["cond_p50_ms"],
                   floor["cond_p99_ms"], floor["etag"], floor["cache_control"], floor["status_if_none_match"]]])
    report.bar("media answers 304 to If-None-Match (browser cache revalidation)",
               app["status_if_none_match"] == 304, str(app["status_if_none_match"]))
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--real-limit", type=int, default=6, help="how many real AnimateDiff GIFs to use")
    p.add_argument("--repeat", type=int, default=2, help="encodes per clip and method (best is kept)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


# What --tiny means here: the test suite's size, seconds long.
TINY = ["--tiny", "--frames", "4", "--size", "64", "--real-limit", "1", "--repeat", "1", "--requests", "5"]


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.gif_encoding", parser, run, argv, lambda rest: parser().parse_args([*TINY, *rest]))

if __name__ == "__main__":
    main(sys.argv[1:])
