"""Automatic clip metrics: seconds per 16-frame 512x512 clip, per metric, on this machine's CPU.

    python -m bench.metrics             # 16 frames at 512x512 (about a minute on 2 cores)
    python -m bench.metrics --tiny      # 4 frames at 64x64, a tiny CLIP: seconds (what the tests run)

Clips: real AnimateDiff GIFs from ``../shared/data/animatediff_gifs`` (the 16-frame ones, 256x256, upscaled to
``--size`` with Lanczos; skipped cleanly when the folder is absent) and a synthetic pan of a random texture. Each
clip is written as a GIF first and timed from the file, as the worker measures a stored clip. Every part is timed
on its own (best of ``--repeat``), then ``compute_weight_free`` as a whole. CLIP relevance is timed with the
ViT-B/32 architecture (``CLIPConfig()``'s defaults, the sizes of ``openai/clip-vit-base-patch32``) built with
random weights: the cost of the real model, not its scores (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import REPO_ROOT, Report, run_cli
from bench.gif_encoding import SHARED_GIFS, real_clips

# Generation on an H100 (BENCHMARKS.md, "Generation on the GPU"): seconds per 16-frame 512x512 clip on the device
# (denoise + VAE decode) and by wall time (with GIF encoding).
GENERATION = {"animatediff (25 steps, CFG)": (4.49, 6.31), "animatediff-lightning-4step": (0.63, 2.49)}


def clips(frames: int, size: int, limit: int, source: Path = SHARED_GIFS) -> list[tuple[str, np.ndarray]]:
    """Real 16-frame AnimateDiff clips (looped or cut to ``frames``) and a synthetic pan, at ``size``."""
    real = real_clips(frames, size, limit, source, keep=lambda p: "compare" in p.name or "motionlora" in p.name)
    out = [(Path(name).stem, np.stack([np.asarray(f) for f in images])) for name, images in real]
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (size, size + 4 * frames, 3), dtype=np.uint8)
    out.append(("synthetic pan (4 px/frame)", np.stack([wide[:, 4 * t:4 * t + size] for t in range(frames)])))
    return out


def _gif(frames: np.ndarray) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=120, loop=0)
    return buf.getvalue()


def _clip_model(tiny: bool) -> Any:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from worker.metrics import LoadedClip
    from worker.tiny import write_tiny_tokenizer

    torch.manual_seed(0)
    if tiny:
        config = CLIPConfig(text_config={"vocab_size": 514, "hidden_size": 16, "intermediate_size": 32,
                                         "num_hidden_layers": 1, "num_attention_heads": 2, "bos_token_id": 512,
                                         "eos_token_id": 513, "pad_token_id": 513},
                            vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                           "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                            projection_dim=8)
    else:
        config = CLIPConfig()  # ViT-B/32 sizes: the cost of openai/clip-vit-base-patch32
    model = CLIPModel(config).eval()
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        write_tiny_tokenizer(Path(folder))
        tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    size = config.vision_config.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LoadedClip(name="random", version="clip/1:random", device="cpu", model=model, tokenizer=tokenizer,
                      processor=processor)


def run(args: argparse.Namespace) -> Report:
    from app.metrics import compute_weight_free, flow, iq, read_gif_frames, stills
    from app.metrics.frames import to_gray
    from bench.common import timed
    from worker.metrics import clip_relevance

    report = Report("metrics", f"Automatic clip metrics: seconds per {args.frames}-frame {args.size}x{args.size} clip",
                    "python -m bench.metrics",
                    params={"frames": args.frames, "size": args.size, "repeat": args.repeat,
                            "flow_max_side": flow.FLOW_MAX_SIDE, "brisque_frames": iq.BRISQUE_FRAMES})
    loaded = _clip_model(args.tiny) if not args.no_clip else None
    iq_problem = iq.brisque_problem()
    rows, data = [], []
    for name, frames in clips(args.frames, args.size, args.real_limit):
        data_gif = _gif(frames)
        t_decode, decoded = timed(lambda data_gif=data_gif: read_gif_frames(data_gif), repeat=args.repeat)
        t_flow, field = timed(lambda decoded=decoded: flow.flow_field(decoded), repeat=args.repeat)
        t_motion, moved = timed(lambda field=field: flow.motion(field), repeat=args.repeat)
        t_warp, _ = timed(lambda field=field: flow.warping_error(field), repeat=args.repeat)
        t_flicker, _ = timed(lambda decoded=decoded: stills.flicker(decoded), repeat=args.repeat)
        t_sharp, _ = timed(lambda decoded=decoded: stills.sharpness(to_gray(decoded)), repeat=args.repeat)
        t_iq = (timed(lambda decoded=decoded: iq.brisque_clip(decoded), repeat=args.repeat)[0]
                if not iq_problem else None)
        t_all, measured = timed(lambda decoded=decoded: compute_weight_free(decoded), repeat=args.repeat)
        t_clip = (timed(lambda decoded=decoded: clip_relevance(loaded, decoded, "a test prompt"),
                        repeat=args.repeat)[0] if loaded is not None else None)
        total = t_decode + t_all
        rows.append([name, t_decode, t_flow, t_motion + t_warp, t_flicker, t_sharp, t_iq, t_all, total, t_clip,
                     moved.mean])
        data.append({"clip": name, "decode_s": t_decode, "flow_s": t_flow, "motion_s": t_motion, "warp_s": t_warp,
                     "flicker_s": t_flicker, "sharpness_s": t_sharp, "brisque_s": t_iq, "weight_free_s": t_all,
                     "decode_plus_weight_free_s": total, "clip_cpu_s": t_clip, "motion_mean": moved.mean,
                     "metrics": sorted(measured.values)})
    report.table(f"Seconds per clip (best of {args.repeat}; flow at most {flow.FLOW_MAX_SIDE} px on the long side, "
                 f"BRISQUE on {iq.BRISQUE_FRAMES} frames)",
                 ["clip", "GIF decode", "Farneback flow", "motion + warping", "flicker", "sharpness", "BRISQUE",
                  "all weight-free", "decode + all", "CLIP ViT-B/32 (CPU)" if not args.tiny else "tiny CLIP (CPU)",
                  "motion px/frame"], rows)
    median = float(np.median([d["decode_plus_weight_free_s"] for d in data]))
    report.data = {"clips": data, "median_decode_plus_weight_free_s": median}
    report.table("Against generation on an H100 (BENCHMARKS.md): weight-free metrics per clip (median above) as a "
                 "share of the clip's generation time",
                 ["model", "device s/clip", "wall s/clip", "metrics / device time", "metrics / wall time"],
                 [[m, d, w, f"{median / d:.0%}", f"{median / w:.0%}"] for m, (d, w) in GENERATION.items()])
    if iq_problem:
        report.notes.append(iq_problem)
    report.notes.append("The metrics run on the worker's CPU while its GPU denoises the next clip "
                        "(`blindpair worker --concurrency 2`, as GIF encoding does), so they add CPU time, "
                        "not GPU time; this machine's cores are slower and fewer than a GPU host's.")
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--real-limit", type=int, default=4, help="how many real AnimateDiff GIFs to use")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-clip", action="store_true", help="leave out the CLIP timing")
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


TINY = ["--tiny", "--frames", "4", "--size", "64", "--real-limit", "1", "--repeat", "1"]


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.metrics", parser, run, argv, lambda rest: parser().parse_args([*TINY, *rest]))


if __name__ == "__main__":
    main(sys.argv[1:])
