"""Tiny random-weight AnimateDiff components written to disk, for tests and CPU benchmarks.

The folder has the layout of a real Stable Diffusion 1.5 base model (unet/, vae/, text_encoder/, tokenizer/,
scheduler/, model_index.json) plus a MotionAdapter folder and a Lightning-style safetensors state dict, so the
``tiny-*`` presets go through exactly the loading code the real presets use. Sizes follow diffusers' own
AnimateDiff tests (tests/pipelines/animatediff/test_animatediff.py, ``get_dummy_components``).
"""

from __future__ import annotations

import json
from pathlib import Path

from worker.presets import get_preset

CROSS_ATTENTION_DIM = 8
BLOCK_OUT_CHANNELS = (8, 8)
LIGHTNING_FILE = "tiny_lightning_2step_diffusers.safetensors"


def _bytes_to_unicode() -> list[str]:
    # The byte-to-printable-character table of GPT-2/CLIP byte-level BPE (openai/CLIP simple_tokenizer.py).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer with only byte-level symbols and no merges: valid, offline, 514 tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def build_tiny_model_dir(folder: Path, *, seed: int = 0) -> Path:
    """Write the tiny base model, motion adapter and Lightning-style adapter file under ``folder``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok_dir = folder / "_tokenizer_src"
    write_tiny_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=BLOCK_OUT_CHANNELS, layers_per_block=2, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM, norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=BLOCK_OUT_CHANNELS, in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, norm_num_groups=2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=CROSS_ATTENTION_DIM, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
        num_hidden_layers=5, vocab_size=len(tokenizer), max_position_embeddings=77,
    ))
    # The scheduler config of SD 1.5 (runwayml/stable-diffusion-v1-5 scheduler_config.json) that the presets edit.
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    # For type checkers diffusers' __init__ binds its models and pipelines to torch-less placeholder classes
    # (utils/dummy_*_objects.py, imported before the real ones), which have none of their methods.
    base = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    base.save_pretrained(str(folder))  # type: ignore[attr-defined]  # diffusers' stub class, above

    adapter_config = dict(get_preset("tiny-lightning-2step").adapter_config)
    torch.manual_seed(seed + 1)
    adapter = MotionAdapter(**adapter_config)
    adapter.save_pretrained(str(folder / "motion_adapter"))  # type: ignore[attr-defined]  # diffusers' stub, above
    torch.manual_seed(seed + 2)
    lightning = MotionAdapter(**adapter_config)
    weights = lightning.state_dict()  # type: ignore[attr-defined]  # diffusers' stub class, above
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / LIGHTNING_FILE))
    return folder
