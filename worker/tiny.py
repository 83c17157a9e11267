"""Tiny random-weight AnimateDiff components written to disk, for tests and CPU benchmarks.

The folder has the layout of a real Stable Diffusion 1.5 base model (unet/, vae/, text_encoder/, tokenizer/,
scheduler/, model_index.json) plus a MotionAdapter folder and a Lightning-style safetensors state dict, so the
``tiny-*`` presets go through exactly the loading code the real presets use. Sizes follow diffusers' own
AnimateDiff tests (tests/pipelines/animatediff/test_animatediff.py, ``get_dummy_components``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


# --- tiny random-weight pipelines of today's video families ---------------------------------------------------------
# Sizes follow diffusers' own fast tests (tests/pipelines/{wan,ltx,hunyuan_video,cogvideo,mochi}/test_*.py,
# get_dummy_components), with tokenizers trained here on a few lines instead of the hub's tiny tokenizers: nothing is
# downloaded. Each folder is a real diffusers layout (model_index.json, one folder per component) written with
# save_pretrained, so the tiny-* presets load it through exactly the code real weights go through.

TINY_FAMILIES = ("wan", "wan22", "ltx", "hunyuanvideo", "cogvideox", "mochi")
# Settings each family's tiny pipeline makes in well under a second a step on one CPU core: valid for the family
# (4k+1, 8k+1, 6k+1 frames; sizes its rules accept), smallest the tiny VAE can decode.
TINY_SETTINGS: dict[str, dict[str, int | float | str]] = {
    "wan": {"frames": 5, "width": 32, "height": 32, "fps": 16},
    "wan22": {"frames": 5, "width": 32, "height": 32, "fps": 16},
    "ltx": {"frames": 9, "width": 32, "height": 32, "fps": 24},
    "hunyuanvideo": {"frames": 5, "width": 16, "height": 16, "fps": 24},
    "cogvideox": {"frames": 9, "width": 16, "height": 16, "fps": 8},
    "mochi": {"frames": 7, "width": 16, "height": 16, "fps": 30},
}
_LINES = ["a red fox running through fresh snow", "the camera pans over a city at night with neon lights",
          "a cat and a dog baking a cake together in a kitchen", "waves crash against rocks at sunset",
          "a chef chops vegetables, steam rising from the pan"]


def tiny_t5_tokenizer():
    """A T5 tokenizer (sentencepiece-style Unigram) trained on a few lines, offline: what Wan (UMT5), LTX-Video,
    CogVideoX and Mochi tokenize with, at a vocabulary of a few dozen pieces."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.train_from_iterator(_LINES * 3, trainer=trainers.UnigramTrainer(
        vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    # T5 ends every sequence with </s>, as the real tokenizer's post-processor does.
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                      special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def tiny_llama_tokenizer():
    """A byte-level BPE Llama tokenizer trained on a few lines (HunyuanVideo's first text encoder is Llama)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(_LINES * 3, trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return LlamaTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                              pad_token="<pad>")


def tiny_clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_tiny_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def _t5_encoder(tokenizer, *, umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kwargs = {"vocab_size": len(tokenizer), "d_model": 32, "d_ff": 37, "d_kv": 8, "num_heads": 4, "num_layers": 2,
              "relative_attention_num_buckets": 8, "pad_token_id": tokenizer.pad_token_id,
              "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": 0}
    if umt5:  # Wan's text encoder is UMT5 (google/umt5-xxl)
        return UMT5EncoderModel(UMT5Config(**kwargs))
    return T5EncoderModel(T5Config(**kwargs))


def _wan_transformer():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                                 out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
                                 cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)


def _tiny_pipeline(family: str, folder: Path, seed: int) -> Any:
    """The pipeline object of ``family`` on tiny random weights."""
    import diffusers
    import torch

    tok_dir = folder.parent / "_tokenizer_src"
    torch.manual_seed(seed)
    # One name per component across the families' branches, each a different diffusers class.
    transformer: Any
    vae: Any
    scheduler: Any
    if family in ("wan", "wan22"):
        tokenizer = tiny_t5_tokenizer()
        vae = diffusers.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                         temperal_downsample=[False, True, True])
        # The scheduler Wan's repos ship: UniPC on flow-matching sigmas.
        scheduler = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                      flow_shift=3.0)
        extra = {"transformer_2": _wan_transformer(), "boundary_ratio": 0.875} if family == "wan22" else {}
        return diffusers.WanPipeline(tokenizer=tokenizer, text_encoder=_t5_encoder(tokenizer, umt5=True), vae=vae,
                                     scheduler=scheduler, transformer=_wan_transformer(), **extra)
    if family == "ltx":
        tokenizer = tiny_t5_tokenizer()
        transformer = diffusers.LTXVideoTransformer3DModel(
            in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
            cross_attention_dim=32, num_layers=1, caption_channels=32)
        vae = diffusers.AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
            upsample_residual=(False,) * 4, upsample_factor=(1, 1, 1, 1), timestep_conditioning=False,
            patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
        return diffusers.LTXConditionPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=vae,
                                              text_encoder=_t5_encoder(tokenizer), tokenizer=tokenizer,
                                              transformer=transformer)
    if family == "hunyuanvideo":
        from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

        tokenizer = tiny_llama_tokenizer()
        tokenizer_2 = tiny_clip_tokenizer(tok_dir / "clip")
        transformer = diffusers.HunyuanVideoTransformer3DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
            num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
            text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4))
        vae = diffusers.AutoencoderKLHunyuanVideo(
            in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
            temporal_compression_ratio=4, mid_block_add_attention=True)
        text_encoder = LlamaModel(LlamaConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, hidden_size=16, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=512))
        text_encoder_2 = CLIPTextModel(CLIPTextConfig(
            bos_token_id=tokenizer_2.bos_token_id, eos_token_id=tokenizer_2.eos_token_id,
            pad_token_id=tokenizer_2.pad_token_id, hidden_size=8, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, vocab_size=len(tokenizer_2), max_position_embeddings=77, projection_dim=32))
        return diffusers.HunyuanVideoPipeline(
            text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2)
    if family == "cogvideox":
        tokenizer = tiny_t5_tokenizer()
        transformer = diffusers.CogVideoXTransformer3DModel(
            num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=226)
        vae = diffusers.AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
            layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
        # CogVideoX-2b ships CogVideoXDDIMScheduler (5b: CogVideoXDPMScheduler).
        scheduler = diffusers.CogVideoXDDIMScheduler(timestep_spacing="trailing", prediction_type="v_prediction",
                                                     beta_schedule="scaled_linear", rescale_betas_zero_snr=True)
        return diffusers.CogVideoXPipeline(tokenizer=tokenizer, text_encoder=_t5_encoder(tokenizer), vae=vae,
                                           transformer=transformer, scheduler=scheduler)
    if family == "mochi":
        tokenizer = tiny_t5_tokenizer()
        transformer = diffusers.MochiTransformer3DModel(
            patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
            in_channels=12, out_channels=None, qk_norm="rms_norm", text_embed_dim=32, time_embed_dim=4,
            activation_fn="swiglu", max_sequence_length=256)
        vae = diffusers.AutoencoderKLMochi(latent_channels=12, out_channels=3, encoder_block_out_channels=(32,) * 4,
                                           decoder_block_out_channels=(32,) * 4, layers_per_block=(1, 1, 1, 1, 1))
        return diffusers.MochiPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=vae,
                                       text_encoder=_t5_encoder(tokenizer), tokenizer=tokenizer,
                                       transformer=transformer)
    raise ValueError(f"no tiny pipeline for family {family!r}; known: {', '.join(TINY_FAMILIES)}")


def tiny_lora_state_dict(transformer, *, rank: int = 2, seed: int = 0, prefix: str = "transformer") -> dict:
    """A random LoRA (PEFT key layout, as diffusers saves LoRAs) over the first two attention query/key
    projections of ``transformer``: what a step-distillation LoRA is, at a size that runs in milliseconds."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    targets = [(n, m) for n, m in transformer.named_modules()
               if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in ("to_q", "to_k")][:2]
    for name, module in targets:
        out[f"{prefix}.{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.1
        out[f"{prefix}.{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.1
    return out


def build_tiny_family(folder: Path, family: str, *, seed: int = 0) -> Path:
    """Write ``family``'s tiny pipeline to ``folder/<family>`` (save_pretrained), with what its student presets
    need: random LoRAs in ``folder/loras``, a separate LTX transformer state dict, a HunyuanVideo transformer
    folder. Returns ``folder`` (the study's base_model for the tiny-* presets)."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe = _tiny_pipeline(family, folder, seed)
    pipe.save_pretrained(str(folder / family))
    loras = folder / "loras"
    loras.mkdir(exist_ok=True)
    if family in ("wan", "wan22"):
        save_file(tiny_lora_state_dict(pipe.transformer, seed=seed + 1), str(loras / "wan_lora.safetensors"))
    if family == "wan22":
        save_file(tiny_lora_state_dict(pipe.transformer_2, seed=seed + 2), str(loras / "wan_lora_2.safetensors"))
    if family == "cogvideox":
        save_file(tiny_lora_state_dict(pipe.transformer, seed=seed + 1), str(loras / "cogvideox_lora.safetensors"))
    if family == "ltx":
        torch.manual_seed(seed + 3)
        student = type(pipe.transformer).from_config(pipe.transformer.config)
        (folder / "ltx_student").mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in student.state_dict().items()},
                  str(folder / "ltx_student" / "transformer.safetensors"))
    if family == "hunyuanvideo":
        torch.manual_seed(seed + 3)
        student = type(pipe.transformer).from_config(pipe.transformer.config)
        student.save_pretrained(str(folder / "hunyuanvideo_student" / "transformer"))
    return folder
