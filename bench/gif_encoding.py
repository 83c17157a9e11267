"""GIF encoding and serving: encode time, file size and fidelity per method for 16 frames at 512x512, and
the media route's response time with caching headers.

    python -m bench.gif_encoding             # full size (about a minute)
    python -m bench.gif_encoding --tiny      # 4 frames at 64x64, seconds

Frames are realistic, not flat colours: real AnimateDiff GIFs from ``../shared/data/animatediff_gifs``
(256x256, upscaled to 512 with Lanczos; skipped cleanly when the folder is absent) and the CPU demo renderer's
frames (``app.media.demo_render``). Methods: the product's encoder (``worker.gif.encode_gif``: Pillow, one
adaptive palette per frame), Pillow with ``optimize=True``, one global palette shared by all frames (with and
without Floyd-Steinberg dithering), libimagequant per frame (PyPI ``imagequant``, optional) and gifsicle -O3
on the product's output (PyPI ``pygifsicle`` + the ``gifsicle`` binary, optional). Fidelity is measured on the
decoded GIF against the RGB frames: mean absolute error, PSNR, and distinct colours per frame against the
original's (a banding proxy: smooth gradients squeezed into few colours show as bands). The pair page loads
two GIFs; at 20 Mbit/s that must take under 2 s.
"""

from __future__ import annotations

import argparse
import io
import math
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


def real_clips(n_frames: int, size: int, limit: int) -> list[tuple[str, list[Image.Image]]]:
    """Up to ``limit`` real AnimateDiff GIFs as RGB frames at ``size`` (looped if shorter); [] if absent."""
    if not SHARED_GIFS.is_dir():
        return []
    out = []
    for path in sorted(SHARED_GIFS.glob("*.gif"))[:limit]:
        with Image.open(path) as im:
            frames = []
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                # Fresh images: the source's info (its transparency, loop, comments) must not leak into encoders.
                rgb = im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
                frames.append(Image.fromarray(np.asarray(rgb)))
        out.append((path.name, [frames[i % len(frames)] for i in range(n_frames)]))
    return out


def demo_clips(n_frames: int, size: int) -> list[tuple[str, list[Image.Image]]]:
    from app.media.demo_render import render_clip

    prompt = "a lighthouse on a cliff at sunset, waves crashing, seagulls circling"
    return [(f"demo-{style}", render_clip(prompt, style=style, frames=n_frames, width=size, height=size))
            for style in ("smooth", "jittery")]


# ----------------------------------------------------------------------------------------------- methods


def _save(frames: list[Image.Image], **kw) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / FPS), loop=0,
                   **kw)
    return buf.getvalue()


def product(frames: list[Image.Image]) -> bytes:
    from worker.gif import encode_gif

    return encode_gif(frames, fps=FPS)


def pillow_optimize(frames: list[Image.Image]) -> bytes:
    return _save([f.convert("RGB") for f in frames], optimize=True)


def _global_palette(frames: list[Image.Image]) -> Image.Image:
    # The palette is fitted on all frames at once (tiled side by side, downscaled to bound the cost).
    w, h = frames[0].size
    tile = Image.new("RGB", (w * len(frames), h))
    for i, f in enumerate(frames):
        tile.paste(f, (i * w, 0))
    tile = tile.resize((max(1, tile.width // 4), max(1, h // 4)), Image.Resampling.BILINEAR)
    return tile.quantize(256, method=Image.Quantize.MEDIANCUT)


def global_palette(frames: list[Image.Image], dither: bool = True) -> bytes:
    pal = _global_palette(frames)
    mode = Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE
    return _save([f.quantize(palette=pal, dither=mode) for f in frames], optimize=False)


def global_palette_nodither(frames: list[Image.Image]) -> bytes:
    return global_palette(frames, dither=False)


def imagequant_per_frame(frames: list[Image.Image]) -> bytes:
    import imagequant

    return _save([imagequant.quantize_pil_image(f.convert("RGBA"), dithering_level=1.0, max_colors=256).convert("RGB")
                  .convert("P", palette=Image.Palette.ADAPTIVE, colors=256) for f in frames], optimize=False)


def gifsicle_o3(frames: list[Image.Image]) -> bytes:
    """pygifsicle runs the gifsicle binary on a file; the product's GIF goes in, -O3 comes out."""
    from pygifsicle import gifsicle

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.gif"
        src.write_bytes(product(frames))
        gifsicle(sources=[str(src)], destination=str(src), optimize=False, options=["-O3"])
        return src.read_bytes()


def gifsicle_lossy(frames: list[Image.Image]) -> bytes:
    from pygifsicle import gifsicle

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.gif"
        src.write_bytes(product(frames))
        gifsicle(sources=[str(src)], destination=str(src), optimize=False, options=["-O3", "--lossy=40"])
        return src.read_bytes()


def available_methods() -> tuple[list[tuple[str, Callable]], list[str]]:
    methods: list[tuple[str, Callable]] = [
        ("product: Pillow adaptive palette per frame (worker.gif.encode_gif)", product),
        ("Pillow adaptive per frame + optimize=True", pillow_optimize),
        ("one global palette, Floyd-Steinberg dither", global_palette),
        ("one global palette, no dither", global_palette_nodither),
    ]
    tried: list[str] = []
    try:
        import imagequant  # noqa: F401

        methods.append(("libimagequant per frame (PyPI imagequant)", imagequant_per_frame))
    except ImportError:
        tried.append("imagequant (libimagequant) not installed: `pip install imagequant` adds its row")
    try:
        import pygifsicle  # noqa: F401

        if shutil.which("gifsicle"):
            methods.append(("product + gifsicle -O3 (PyPI pygifsicle)", gifsicle_o3))
            methods.append(("product + gifsicle -O3 --lossy=40", gifsicle_lossy))
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
    product_name = methods[0][0]
    prod = [r for recs in results.values() for r in recs.get(product_name, [])]
    worst_pair = max(2 * r["bytes"] * 8 / LINK_BITS_PER_S for r in prod)
    report.bar("pair page (two GIFs, product encoder) loads in < 2 s at 20 Mbit/s, largest clip",
               worst_pair < 2, f"{worst_pair:.2f} s")
    enc = max(r["seconds"] for r in prod)
    report.bar("encoding < 10% of a Lightning clip's GPU time", None,
               f"encode {enc:.2f} s (worst clip); passes if the 4-step Lightning clip takes ≥ {10 * enc:.1f} s on the "
               "GPU: pending the GPU run (scripts/gpu_check.py / bench.gpu_generation), no GPU here")
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
