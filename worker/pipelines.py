"""Build pipelines from presets (AnimateDiff, and any diffusers video family), and keep them loaded across clips.

Weights come from a local folder, the Hugging Face cache (``BLINDPAIR_MODEL_CACHE_DIR`` or the default
cache) or the hub; ``BLINDPAIR_HF_OFFLINE`` / ``HF_HUB_OFFLINE`` mean cache only. A missing file raises
``WeightsMissing`` naming the repo, the file and the command that fetches it.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import get_settings
from worker.presets import MemoryPlan, Preset, RunSpec, plan_memory, video_pipeline_classes

log = logging.getLogger(__name__)
# diffusers >= 0.36 renamed torch_dtype to dtype; torch_dtype still works on every version we support.
warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)


class WeightsMissing(RuntimeError):
    """Weights are not on this machine (or not reachable); the message says how to fetch them."""


class TransientLoadError(RuntimeError):
    """The hub could not be reached; worth retrying."""


def quiet_libraries() -> None:
    """No download/loading progress bars in worker logs: one line per clip is what an operator reads."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return get_settings().hf_offline or flag


def hub_kwargs() -> dict[str, Any]:
    settings = get_settings()
    kwargs: dict[str, Any] = {"local_files_only": offline()}
    if settings.model_cache_dir:
        kwargs["cache_dir"] = str(settings.model_cache_dir)
    return kwargs


def source_kwargs(name: str) -> dict[str, Any]:
    """``from_pretrained``'s keywords for ``name``: none for a local folder, else the hub's (``hub_kwargs``)."""
    return {} if Path(name).is_dir() else hub_kwargs()


def fetch_command(repo: str, filename: str | None = None) -> str:
    return " ".join(["hf download", repo] + ([filename] if filename else []))


def _missing(repo: str, filename: str | None, exc: BaseException) -> WeightsMissing:
    what = f"{filename!r} of {repo!r}" if filename else f"the model {repo!r}"
    where = "(offline mode: only the local cache is searched) " if offline() else ""
    cache = get_settings().model_cache_dir
    cache_hint = f" --cache-dir {cache}" if cache else ""
    return WeightsMissing(
        f"weights missing: {what} could not be loaded {where}({type(exc).__name__}: {str(exc)[:300]}). "
        f"Fetch them on a machine with internet access with `{fetch_command(repo, filename)}{cache_hint}` "
        f"(older huggingface_hub: `huggingface-cli download {repo}{' ' + filename if filename else ''}`), "
        f"or point the preset at a local folder."
    )


def _is_network_error(exc: BaseException) -> bool:
    seen = 0
    link: BaseException | None = exc  # then its cause (or context), and so on down the chain
    while link is not None and seen < 10:
        name = type(link).__name__
        if isinstance(link, ConnectionError | TimeoutError) or name in {"ConnectError", "ReadTimeout",
                                                                          "ConnectTimeout", "RemoteProtocolError"}:
            return True
        link = link.__cause__ or link.__context__
        seen += 1
    return False


def wrap_load_error(repo: str, filename: str | None, exc: BaseException) -> Exception:
    if _is_network_error(exc) and not offline():
        return TransientLoadError(f"could not reach the Hugging Face hub for {repo!r}: {exc}")
    return _missing(repo, filename, exc)


def resolve_file(repo: str, filename: str) -> str:
    """Path of one file: inside a local folder, else from the HF cache/hub."""
    local = Path(repo)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise WeightsMissing(f"weights missing: {filename!r} is not in the folder {repo}")
        return str(path)
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, filename, **hub_kwargs())
    except Exception as exc:  # huggingface_hub raises several unrelated types for "not there"
        raise wrap_load_error(repo, filename, exc) from exc


def torch_dtype(name: str, device: str):
    import torch

    # Half precision on the CPU is slow or unsupported for several kernels; the clip records what really ran.
    if device == "cpu" and name == "float16":
        return torch.float32
    return getattr(torch, name)


def load_adapter(preset: Preset, *, dtype):
    from diffusers import MotionAdapter

    if preset.adapter_file:
        # AnimateDiff-Lightning ships bare state dicts: build the default MotionAdapter and load into it, as in
        # the model card (https://huggingface.co/ByteDance/AnimateDiff-Lightning).
        from safetensors.torch import load_file

        path = resolve_file(preset.adapter_repo, preset.adapter_file)
        adapter = MotionAdapter(**preset.adapter_config)
        # For type checkers diffusers' __init__ binds MotionAdapter (and every model and pipeline) to its torch-less
        # placeholder class (utils/dummy_pt_objects.py, imported before the real one), which has no nn.Module methods.
        try:
            adapter.load_state_dict(load_file(path))  # type: ignore[attr-defined]  # diffusers' stub class, above
        except RuntimeError as exc:
            raise WeightsMissing(f"{preset.adapter_file!r} of {preset.adapter_repo!r} does not fit "
                                 f"MotionAdapter({preset.adapter_config or ''}): {str(exc)[:300]}") from exc
        return adapter.to(dtype=dtype)  # type: ignore[attr-defined]  # diffusers' stub class, above
    kwargs = source_kwargs(preset.adapter)
    try:
        return MotionAdapter.from_pretrained(preset.adapter, torch_dtype=dtype, **kwargs)
    except Exception as exc:
        raise wrap_load_error(preset.adapter, None, exc) from exc


def build_scheduler(preset: Preset, base_config: dict[str, Any]):
    import diffusers

    cls = getattr(diffusers, preset.scheduler, None)
    if cls is None:
        raise PipelineUnavailable(f"preset {preset.name!r}: diffusers has no scheduler {preset.scheduler!r}")
    return cls.from_config(base_config, **preset.scheduler_config)


@dataclass
class LoadedPipeline:
    pipe: Any
    base_scheduler_config: dict[str, Any]
    load_seconds: float
    dtype: str
    memory_plan: MemoryPlan | None = None
    base_scheduler_class: str = ""


def gpu_total_gb(device: str) -> float | None:
    """Total memory of the CUDA device in GB (None on the CPU): what the memory plan is made for."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_properties(torch.device(device)).total_memory / 1e9


def memory_plan_for(spec: RunSpec, device: str) -> MemoryPlan:
    return plan_memory(spec.preset, gpu_gb=gpu_total_gb(device), frames=spec.frames, width=spec.width,
                       height=spec.height)


def load_pipeline(spec: RunSpec, *, device: str) -> LoadedPipeline:
    """A fresh pipeline for ``spec`` on ``device`` (use PipelineCache to reuse one)."""
    if spec.preset.kind == "diffusers":
        return load_diffusers_pipeline(spec, device=device)
    from diffusers import AnimateDiffPipeline

    t0 = time.perf_counter()
    quiet_libraries()
    dtype = torch_dtype(spec.dtype, device)
    adapter = load_adapter(spec.preset, dtype=dtype)
    kwargs = source_kwargs(spec.base_model)
    try:
        pipe = AnimateDiffPipeline.from_pretrained(spec.base_model, motion_adapter=adapter, torch_dtype=dtype, **kwargs)
    except Exception as exc:
        raise wrap_load_error(spec.base_model, None, exc) from exc
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    base_config = dict(pipe.scheduler.config)
    pipe.scheduler = build_scheduler(spec.preset, base_config)
    return LoadedPipeline(pipe, base_config, time.perf_counter() - t0, str(dtype).removeprefix("torch."))


def pipeline_class(name: str):
    """The installed diffusers' pipeline class ``name``; a missing one is named with the known video classes."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None:
        raise PipelineUnavailable(
            f"the installed diffusers {diffusers.__version__} has no pipeline class {name!r}; known text-to-video "
            f"classes: {', '.join(video_pipeline_classes())} (upgrade diffusers or fix the preset)")
    return cls


class PipelineUnavailable(RuntimeError):
    """The preset names a pipeline or scheduler class the installed diffusers does not have."""


def _component_dtypes(preset: Preset, dtype, device: str) -> Any:
    """from_pretrained's torch_dtype: one dtype, or a mapping when the card loads some components in another
    (Wan's VAE in float32, HunyuanVideo's text encoders in float16)."""
    if not preset.component_dtypes:
        return dtype
    return {"default": dtype, **{k: torch_dtype(v, device) for k, v in preset.component_dtypes.items()}}


def _load_transformer(preset: Preset, dtype) -> dict[str, Any]:
    """A separate transformer checkpoint given as a diffusers folder/repo (``transformer_subfolder`` or the folder
    itself): loaded with AutoModel and handed to the pipeline in place of the one in ``weights``."""
    if not preset.transformer or preset.transformer_file:
        return {}
    from diffusers import AutoModel

    kwargs = source_kwargs(preset.transformer)
    if preset.transformer_subfolder:
        kwargs["subfolder"] = preset.transformer_subfolder
    try:
        model = AutoModel.from_pretrained(preset.transformer, torch_dtype=dtype, **kwargs)
    except Exception as exc:
        raise wrap_load_error(preset.transformer, None, exc) from exc
    return {"transformer": model}


def _load_transformer_file(pipe, preset: Preset) -> None:
    """A separate transformer given as one safetensors state dict, loaded into the pipeline's transformer (strict:
    a checkpoint of another architecture is refused, not half-loaded)."""
    from safetensors.torch import load_file

    path = resolve_file(preset.transformer, preset.transformer_file)
    try:
        pipe.transformer.load_state_dict(load_file(path), strict=True)
    except RuntimeError as exc:
        raise WeightsMissing(f"{preset.transformer_file!r} of {preset.transformer!r} does not fit the transformer of "
                             f"{preset.weights!r}: {str(exc)[:300]}") from exc


def _fuse_loras(pipe, preset: Preset) -> None:
    """Each LoRA loaded, fused into its transformer at its scale, and unloaded, one at a time: the student then runs
    with plain weights, at the speed of the teacher's architecture (an unfused LoRA adds two matmuls per layer)."""
    from safetensors.torch import load_file

    for i, lora in enumerate(preset.loras):
        path = resolve_file(lora.repo, lora.file)
        name = f"blindpair_lora_{i}"
        kwargs: dict[str, Any] = {"adapter_name": name}
        if lora.target == "transformer_2":
            kwargs["load_into_transformer_2"] = True
        try:
            # A state dict rather than the file: the same call for local folders and the hub cache; diffusers'
            # family loaders convert non-diffusers key layouts (e.g. lightx2v's) from the dict as from a file.
            pipe.load_lora_weights(load_file(path), **kwargs)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise WeightsMissing(f"LoRA {lora.file!r} of {lora.repo!r} does not fit {lora.target} of "
                                 f"{preset.weights!r}: {str(exc)[:300]}") from exc
        pipe.fuse_lora(components=[lora.target], lora_scale=lora.scale, adapter_names=[name])
        pipe.unload_lora_weights()


def _apply_memory_plan(pipe, plan: MemoryPlan, device: str) -> None:
    if plan.offload == "model_cpu_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.offload == "group_offload":
        # Leaf-level groups streamed ahead of use (diffusers' memory guide): the lowest peak, slower per step.
        pipe.enable_group_offload(onload_device=device, offload_device="cpu", offload_type="leaf_level",
                                  use_stream=True)
    else:
        pipe.to(device)
    vae = getattr(pipe, "vae", None)
    if plan.vae_tiling and vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()


def load_diffusers_pipeline(spec: RunSpec, *, device: str) -> LoadedPipeline:
    """A diffusers video pipeline for a ``diffusers`` preset: weights, separate transformer, fused LoRAs, the
    memory plan for this GPU (full residency, model CPU offload or group offload; VAE tiling) applied."""
    t0 = time.perf_counter()
    quiet_libraries()
    p = spec.preset
    cls = pipeline_class(p.pipeline)
    dtype = torch_dtype(spec.dtype, device)
    components = _load_transformer(p, dtype)
    kwargs = source_kwargs(p.weights)
    try:
        pipe = cls.from_pretrained(p.weights, torch_dtype=_component_dtypes(p, dtype, device), **components, **kwargs)
    except Exception as exc:
        raise wrap_load_error(p.weights, None, exc) from exc
    if p.transformer_file:
        _load_transformer_file(pipe, p)
    if p.loras:
        _fuse_loras(pipe, p)
    plan = memory_plan_for(spec, device)
    _apply_memory_plan(pipe, plan, device)
    pipe.set_progress_bar_config(disable=True)
    base_config = dict(pipe.scheduler.config)
    base_class = type(pipe.scheduler).__name__
    entry = LoadedPipeline(pipe, base_config, 0.0, str(dtype).removeprefix("torch."), plan, base_class)
    pipe.scheduler = build_scheduler_for(p, entry)
    entry.load_seconds = time.perf_counter() - t0
    return entry


def build_scheduler_for(preset: Preset, entry: LoadedPipeline):
    """The preset's scheduler: AnimateDiff presets always name one; a diffusers preset may keep the weights' own
    class ("" ) and still replace some of its config."""
    if preset.kind != "diffusers" or preset.scheduler:
        return build_scheduler(preset, entry.base_scheduler_config)
    import diffusers

    cls = getattr(diffusers, entry.base_scheduler_class or type(entry.pipe.scheduler).__name__)
    return cls.from_config(entry.base_scheduler_config, **preset.scheduler_config)


def weights_key(spec: RunSpec, device: str) -> tuple:
    p = spec.preset
    if p.kind == "diffusers":
        plan = memory_plan_for(spec, device)
        return (p.pipeline, p.weights, p.transformer, p.transformer_subfolder, p.transformer_file,
                tuple((lo.repo, lo.file, lo.scale, lo.target) for lo in p.loras),
                json.dumps(p.component_dtypes, sort_keys=True), spec.dtype, plan.offload, plan.vae_tiling, device)
    return (spec.base_model, p.adapter, p.adapter_repo, p.adapter_file, json.dumps(p.adapter_config, sort_keys=True),
            spec.dtype, device)


def free_device_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


class PipelineCache:
    """Loaded pipelines of this process, least recently used dropped first.

    Capacity 2 (``BLINDPAIR_PIPELINE_CACHE_SIZE``) holds both models of a two-model study, so a worker that
    alternates between them does not reload; a dropped pipeline is deleted and the CUDA cache emptied.
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = max(1, capacity or int(os.environ.get("BLINDPAIR_PIPELINE_CACHE_SIZE", "2")))
        self._items: OrderedDict[tuple, LoadedPipeline] = OrderedDict()
        self.loads = 0

    def get(self, spec: RunSpec, *, device: str) -> tuple[LoadedPipeline, bool]:
        """(pipeline with the preset's scheduler, whether it was loaded by this call)."""
        key = weights_key(spec, device)
        loaded = key in self._items
        if loaded:
            self._items.move_to_end(key)
        else:
            while len(self._items) >= self.capacity:
                self._evict_oldest(device)
            self._items[key] = load_pipeline(spec, device=device)
            self.loads += 1
        entry = self._items[key]
        # A fresh scheduler per clip: cheap, and no state (step index, sigmas) leaks between presets.
        entry.pipe.scheduler = build_scheduler_for(spec.preset, entry)
        return entry, not loaded

    def _evict_oldest(self, device: str) -> None:
        _, entry = self._items.popitem(last=False)
        del entry  # the cache held the only reference; gc + empty_cache below return its GPU memory
        free_device_memory(device)

    def clear(self) -> None:
        while self._items:
            self._evict_oldest(next(iter(self._items))[-1])

    def __len__(self) -> int:
        return len(self._items)


_process_cache: PipelineCache | None = None


def process_cache() -> PipelineCache:
    """The one cache of this worker process (each prefork child has its own)."""
    global _process_cache
    if _process_cache is None:
        _process_cache = PipelineCache()
    return _process_cache
