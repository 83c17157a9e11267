"""The worker's side of the automatic clip metrics: CLIP text-video relevance (weights), then storing every metric.

CLIP relevance: the mean, over a clip's frames, of the cosine similarity between the frame's CLIP image embedding
and the prompt's text embedding (as CLIPScore, Hessel et al. 2021, before its 2.5x rescaling and clipping at 0,
and as VBench's "overall consistency" does with ViCLIP). The model is ``BLINDPAIR_CLIP_MODEL``: a hub id (default
``openai/clip-vit-base-patch32``) or a local folder, loaded like the generation pipelines (``worker.pipelines``):
the Hugging Face cache or ``BLINDPAIR_MODEL_CACHE_DIR``, offline mode honoured, and a missing model named with the
command that fetches it. ``BLINDPAIR_CLIP_MODEL=none`` turns CLIP off; the weight-free metrics are computed
either way.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.config import get_settings
from app.metrics.registry import CLIP_SCORE, Measurement, MetricValue, spec
from app.services import metrics as svc
from worker.pipelines import TransientLoadError, WeightsMissing, quiet_libraries, source_kwargs, wrap_load_error

log = logging.getLogger(__name__)
CLIP_MODEL_ENV = "BLINDPAIR_CLIP_MODEL"
MAX_TOKENS = 77  # CLIP's context; BlindPair's prompts are refused above it (app/prompts)


def clip_model_name() -> str | None:
    """The CLIP model to use, or None when turned off."""
    name = get_settings().clip_model.strip()
    return None if name.lower() in {"", "none", "off"} else name


def clip_version(name: str) -> str:
    """The stored version: the metric's definition plus which CLIP computed it (a long local path is hashed)."""
    tag = name if len(name) <= 40 else "sha256:" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{spec(CLIP_SCORE).version}:{tag}"[:60]


@dataclass
class LoadedClip:
    name: str
    version: str
    device: str
    model: Any
    tokenizer: Any
    processor: Any


def _image_processor(name: str, model: Any, kwargs: dict[str, Any]) -> Any:
    """The model's own preprocessing (preprocessor_config.json) or, without one, CLIP's: resize the short side,
    centre crop to the model's input size, OpenAI's mean and standard deviation (CLIPImageProcessor's defaults)."""
    from transformers import CLIPImageProcessor

    try:
        return CLIPImageProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError):
        size = int(model.config.vision_config.image_size)
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def load_clip(name: str, *, device: str) -> LoadedClip:
    """CLIP's model, tokenizer and image preprocessing from a local folder or the hub (cache first)."""
    from transformers import CLIPModel, CLIPTokenizer

    quiet_libraries()
    kwargs = source_kwargs(name)
    try:
        model = CLIPModel.from_pretrained(name, **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(name, model_max_length=MAX_TOKENS, **kwargs)
    except Exception as exc:  # huggingface_hub and transformers raise several unrelated types for "not there"
        raise wrap_load_error(name, None, exc) from exc
    processor = _image_processor(name, model, kwargs)
    model.eval().to(device)
    return LoadedClip(name=name, version=clip_version(name), device=device, model=model, tokenizer=tokenizer,
                      processor=processor)


def clip_relevance(loaded: LoadedClip, frames: np.ndarray, text: str) -> tuple[float, list[float]]:
    """(mean, per-frame) cosine similarity of each frame with the text. ``frames``: (T, H, W, 3) uint8 RGB."""
    import torch

    tokens = loaded.tokenizer([text], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    pixels = loaded.processor(images=list(frames), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        # CLIPModel's forward returns L2-normalised image_embeds and text_embeds (transformers 4 and 5 alike).
        out = loaded.model(input_ids=tokens["input_ids"].to(loaded.device),
                           attention_mask=tokens["attention_mask"].to(loaded.device),
                           pixel_values=pixels.to(loaded.device, dtype=loaded.model.dtype), return_dict=True)
        cosine = (out.image_embeds.float() @ out.text_embeds.float().T)[:, 0].cpu().numpy()
    per_frame = [float(x) for x in cosine]
    return float(np.mean(per_frame)), per_frame


_loaded: dict[tuple[str, str], LoadedClip] = {}
_problems: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def process_clip(device: str) -> tuple[LoadedClip | None, str | None]:
    """This process's CLIP on ``device`` (loaded once), or why there is none (said once in the log)."""
    name = clip_model_name()
    if name is None:
        return None, f"CLIP is turned off ({CLIP_MODEL_ENV}=none)"
    key = (name, device)
    with _lock:
        if key in _loaded:
            return _loaded[key], None
        if key in _problems:
            return None, _problems[key]
        try:
            _loaded[key] = load_clip(name, device=device)
            return _loaded[key], None
        except (WeightsMissing, TransientLoadError) as exc:
            problem = f"CLIP relevance not computed: {exc}"
            log.error("%s (set %s to another hub id or a local folder, or to 'none')", problem, CLIP_MODEL_ENV)
            if isinstance(exc, WeightsMissing):  # a hub that could not be reached is tried again next time
                _problems[key] = problem
            return None, problem


def clip_extra(loaded: LoadedClip) -> svc.Extra:
    """The ``extra`` measurement ``app.services.metrics`` adds to the weight-free ones."""

    def measure(frames: np.ndarray, prompt: str) -> Measurement:
        value, per_frame = clip_relevance(loaded, frames, prompt)
        return Measurement(values={CLIP_SCORE: MetricValue(value=value, version=loaded.version,
                                                           per_frame=list[float | None](per_frame))})

    return measure


def compute_for_clips(clip_ids: list[int], *, device: str = "cpu", with_clip: bool = True,
                      force: bool = False, progress: svc.Progress | None = None) -> svc.ComputeSummary:
    """Every metric of the clips (CLIP relevance too, where the weights are here), stored per clip."""
    extra, problem = None, None
    if with_clip:
        loaded, problem = process_clip(device)
        extra = clip_extra(loaded) if loaded is not None else None
    summary = svc.compute_clips(clip_ids, force=force, extra=extra, progress=progress)
    if problem:
        summary.not_computed[CLIP_SCORE] = problem
    return summary
