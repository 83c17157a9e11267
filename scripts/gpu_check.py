"""GPU check: the AnimateDiff and AnimateDiff-Lightning architectures at full size, random weights, real code path.

    python scripts/gpu_check.py                 # CUDA, fp16, 16 frames at 512x512 (needs ~10 GB of GPU memory)
    python scripts/gpu_check.py --tiny          # CPU, tiny random components, 2 frames at 32x32 (what tests run)
    python scripts/gpu_check.py --json out.json

No weights are downloaded: the components are SD 1.5-sized (UNet, VAE, CLIP ViT-L/14 text encoder) and a
default-sized MotionAdapter, randomly initialised, so the timings are those of the real architectures (the
pictures are noise). Each clip goes through ``worker.generate.generate_clip``, the worker's own code, so the
split into denoising / VAE decode / GIF encode and the UNet evaluation count are measured as in production.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Stable Diffusion 1.5 component configs (runwayml/stable-diffusion-v1-5 unet/vae config.json; text encoder =
# openai/clip-vit-large-patch14 text tower).
SD15_UNET = dict(  # noqa: C408 - keyword form mirrors the config.json keys
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)
SD15_VAE = dict(  # noqa: C408 - as above
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
)
CLIP_L_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "projection_dim": 768}
SD15_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
                  "set_alpha_to_one": False, "steps_offset": 1}


def build_components(*, tiny: bool, device: str, dtype):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from worker import tiny as tiny_mod
    from worker.presets import get_preset

    tok_dir = Path(tempfile.mkdtemp(prefix="gpu-check-tok-"))
    tiny_mod.write_tiny_tokenizer(tok_dir)  # token ids only index the embedding; its size does not change cost
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU directly: a CPU init of ~1.3B parameters takes minutes
        if tiny:
            unet = UNet2DConditionModel(
                block_out_channels=tiny_mod.BLOCK_OUT_CHANNELS, layers_per_block=2, sample_size=8, in_channels=4,
                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=tiny_mod.CROSS_ATTENTION_DIM,
                norm_num_groups=2)
            vae = AutoencoderKL(block_out_channels=tiny_mod.BLOCK_OUT_CHANNELS, in_channels=3, out_channels=3,
                                down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                                latent_channels=4, norm_num_groups=2)
            text = CLIPTextModel(CLIPTextConfig(hidden_size=tiny_mod.CROSS_ATTENTION_DIM, intermediate_size=37,
                                                num_hidden_layers=5, num_attention_heads=4, vocab_size=len(tokenizer),
                                                max_position_embeddings=77, eos_token_id=tokenizer.eos_token_id,
                                                bos_token_id=tokenizer.bos_token_id))
            adapter_config = dict(get_preset("tiny-lightning-2step").adapter_config)
        else:
            unet = UNet2DConditionModel(**SD15_UNET)
            vae = AutoencoderKL(**SD15_VAE)
            text = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT, eos_token_id=tokenizer.eos_token_id,
                                                bos_token_id=tokenizer.bos_token_id))
            adapter_config = {}  # MotionAdapter() defaults = the SD 1.5 motion modules both presets load into
        adapters = {"animatediff": MotionAdapter(**adapter_config), "lightning": MotionAdapter(**adapter_config)}
    scheduler = DDIMScheduler(**SD15_SCHEDULER)
    return (unet.to(dtype=dtype), vae.to(dtype=dtype), text.to(dtype=dtype), tokenizer, scheduler,
            {k: v.to(dtype=dtype) for k, v in adapters.items()})


def cache_pipeline(cache, spec, parts, *, device: str, dtype_name: str) -> None:
    """Hand an AnimateDiff pipeline made of ``parts`` (unet, vae, text encoder, tokenizer, scheduler, motion
    adapter) to the worker's pipeline cache as if loaded from disk, so ``generate_clip`` runs its own code on
    it (it sets the preset's scheduler itself)."""
    from diffusers import AnimateDiffPipeline

    from worker.pipelines import LoadedPipeline, weights_key

    unet, vae, text, tokenizer, scheduler, adapter = parts
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, motion_adapter=adapter,
                               scheduler=scheduler).to(device)
    pipe.set_progress_bar_config(disable=True)
    cache._items[weights_key(spec, device)] = LoadedPipeline(pipe, dict(scheduler.config), 0.0, dtype_name)


def run(args: argparse.Namespace) -> dict:
    import torch

    from worker.generate import device_name, generate_clip
    from worker.pipelines import PipelineCache
    from worker.presets import resolve_run

    device = "cpu" if args.tiny else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU here: run with --tiny for the CPU check, or on a machine with a GPU.")
    dtype_name = "float32" if args.tiny else args.dtype
    dtype = getattr(torch, dtype_name)
    settings = {"frames": args.frames or (2 if args.tiny else 16), "width": args.size or (32 if args.tiny else 512),
                "height": args.size or (32 if args.tiny else 512), "fps": 8, "dtype": dtype_name,
                "negative_prompt": "bad quality", "base_model": "random-weights"}
    presets = {"animatediff": "animatediff", "lightning": f"animatediff-lightning-{args.lightning_steps}step"}
    t0 = time.perf_counter()
    unet, vae, text, tokenizer, scheduler, adapters = build_components(tiny=args.tiny, device=device, dtype=dtype)
    build_seconds = time.perf_counter() - t0
    out = {"device": device_name(device), "dtype": dtype_name, "settings": settings, "build_seconds": build_seconds,
           "runs": args.runs, "presets": {}}
    cache = PipelineCache(capacity=1)
    for key, preset in presets.items():
        steps = args.steps or (1 if args.tiny else 0)
        spec = resolve_run(model_name=key, preset=preset, overrides={"steps": steps, "off_card": True} if steps else {},
                           settings=settings)
        cache.clear()
        cache_pipeline(cache, spec, (unet, vae, text, tokenizer, scheduler, adapters[key]), device=device,
                       dtype_name=dtype_name)
        generate_clip(spec, prompt="warm-up", seed=0, device=device, cache=cache)  # kernels, allocator, cuDNN
        results = [generate_clip(spec, prompt="a corgi running on a beach at sunset", seed=i, device=device,
                                 cache=cache) for i in range(args.runs)]

        def med(attr: str, results=results) -> float:
            return statistics.median(getattr(r, attr) for r in results)

        row = {
            "preset": preset, "steps": spec.steps, "guidance": spec.guidance, "unet_evals": results[0].unet_evals,
            "seconds_per_clip": med("wall_seconds"), "denoise_seconds": med("denoise_seconds"),
            "decode_seconds": med("decode_seconds"), "encode_seconds": med("encode_seconds"),
            "peak_memory_bytes": max((r.peak_memory_bytes or 0) for r in results) or None,
            "scheduler": results[0].generation["scheduler_class"],
        }
        row["clips_per_hour"] = 3600 / row["seconds_per_clip"]
        row["seconds_per_unet_eval"] = row["denoise_seconds"] / row["unet_evals"]
        out["presets"][key] = row
        cache.clear()
    ad, light = out["presets"]["animatediff"], out["presets"]["lightning"]
    out["speedup"] = ad["seconds_per_clip"] / light["seconds_per_clip"]
    out["speedup_ideal_unet_evals"] = ad["unet_evals"] / light["unet_evals"]
    return out


def report(out: dict) -> str:
    s = out["settings"]
    lines = [f"{out['device']}, {out['dtype']}, {s['frames']} frames at {s['width']}x{s['height']}, "
             f"median of {out['runs']} clip(s) after one warm-up "
             f"(random weights built in {out['build_seconds']:.1f} s)",
             f"{'preset':34} {'evals':>5} {'s/clip':>8} {'denoise':>8} {'VAE':>7} {'GIF':>6} {'s/eval':>7} "
             f"{'peak GiB':>8} {'clips/h':>8}"]
    for row in out["presets"].values():
        peak = f"{row['peak_memory_bytes'] / 2**30:.2f}" if row["peak_memory_bytes"] else "n/a"
        lines.append(f"{row['preset']:34} {row['unet_evals']:>5} {row['seconds_per_clip']:>8.3f} "
                     f"{row['denoise_seconds']:>8.3f} {row['decode_seconds']:>7.3f} {row['encode_seconds']:>6.3f} "
                     f"{row['seconds_per_unet_eval']:>7.4f} {peak:>8} {row['clips_per_hour']:>8.0f}")
    why = ("the gap is VAE decode, GIF encode and text encoding, which do not shrink with fewer steps"
           if out["speedup"] <= out["speedup_ideal_unet_evals"] else
           "above the ideal, so the timings are noisy: a busy machine or too few --runs")
    lines.append(f"speedup Lightning vs AnimateDiff: {out['speedup']:.2f}x (ideal by UNet evaluations: "
                 f"{out['speedup_ideal_unet_evals']:.1f}x; {why})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny components on the CPU (a quick self-test)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--frames", type=int, default=0)
    parser.add_argument("--size", type=int, default=0, help="width and height (multiple of 8)")
    parser.add_argument("--steps", type=int, default=0, help="override both presets' steps (--tiny: 1)")
    parser.add_argument("--runs", type=int, default=3, help="timed clips per preset after one warm-up")
    parser.add_argument("--lightning-steps", type=int, default=4, choices=(1, 2, 4, 8))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    out = run(args)
    print(report(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
