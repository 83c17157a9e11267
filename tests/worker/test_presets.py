"""Presets and settings: defaults as published, and every bad input refused with a sentence."""

from __future__ import annotations

import pytest

from worker.presets import GenerationConfigError, all_presets, get_preset, resolve_run, validate_settings


def test_real_presets_match_the_published_recipes():
    ad = get_preset("animatediff")
    assert (ad.adapter, ad.steps, ad.guidance) == ("guoyww/animatediff-motion-adapter-v1-5-2", 25, 7.5)
    for n in (1, 2, 4, 8):
        p = get_preset(f"animatediff-lightning-{n}step")
        assert p.adapter_repo == "ByteDance/AnimateDiff-Lightning"
        assert p.adapter_file == f"animatediff_lightning_{n}step_diffusers.safetensors"
        assert (p.steps, p.guidance, p.adapter_config) == (n, 1.0, {})
    assert {"demo-smooth", "demo-jittery", "tiny-animatediff", "tiny-lightning-2step"} <= set(all_presets())


def test_defaults_are_the_standard_study_settings():
    spec = resolve_run(model_name="m", preset="animatediff-lightning-4step", overrides={}, settings=None)
    assert (spec.frames, spec.width, spec.height, spec.fps) == (16, 512, 512, 8.0)
    assert (spec.base_model, spec.dtype, spec.steps, spec.guidance) == ("emilianJR/epiCRealism", "float16", 4, 1.0)
    assert not spec.uses_cfg


def test_overrides_change_steps_and_guidance_only():
    spec = resolve_run(model_name="m", preset="animatediff", overrides={"steps": 30, "guidance": 6, "off_card": True},
                       settings={"base_model": "/models/toonyou"})
    assert (spec.steps, spec.guidance, spec.base_model) == (30, 6.0, "/models/toonyou")
    assert spec.describe()["off_card"] == ["steps 30 (card: 25)", "guidance 6.0 (card: 7.5)"]
    assert spec.describe()["scheduler_config"]["timestep_spacing"] == "linspace"


@pytest.mark.parametrize(("preset", "overrides", "settings", "needle"), [
    ("nope", {}, {}, "unknown preset 'nope'"),
    ("animatediff", {"steps": -1}, {}, "steps must be a whole number from 1 to 1000, not -1"),
    ("animatediff", {"steps": 2.5}, {}, "steps must be a whole number"),
    ("animatediff", {"guidance": "high"}, {}, "guidance must be a number"),
    ("animatediff", {"frames": 8}, {}, "cannot override frames"),
    ("animatediff", {}, {"width": 500}, "width must be a multiple of 8"),
    ("animatediff", {}, {"height": 0}, "height must be a positive whole number"),
    ("animatediff", {}, {"seeds": [1, 1]}, "seeds must not repeat"),
    ("animatediff", {}, {"seeds": [-3]}, "seeds must be a non-empty list"),
    ("animatediff", {}, {"dtype": "int8"}, "dtype must be one of"),
    ("animatediff", {}, {"resolution": 5}, "unknown setting(s) resolution"),
    ("", {}, {}, "has no preset"),
    # Leaving a preset's card needs the model marked as an off-card variant (issue 21).
    ("animatediff-lightning-4step", {"steps": 25}, {}, "steps 25 (card: 4) leaves the card of preset"),
    ("animatediff-lightning-4step", {"guidance": 7.5}, {}, "guidance 7.5 (card: 1.0) leaves the card"),
    ("animatediff-lightning-4step", {"steps": 25, "off_card": "yes"}, {}, "off_card must be true or false"),
])
def test_bad_input_is_refused_with_a_sentence(preset, overrides, settings, needle):
    with pytest.raises(GenerationConfigError) as err:
        resolve_run(model_name="m", preset=preset, overrides=overrides, settings=settings)
    assert needle in str(err.value)


def test_the_cards_own_settings_are_not_off_card():
    spec = resolve_run(model_name="m", preset="animatediff-lightning-4step", overrides={"steps": 4, "guidance": 1},
                       settings={})
    assert "off_card" not in spec.describe() and spec.off_card == ()


def test_every_problem_is_listed_at_once():
    with pytest.raises(GenerationConfigError) as err:
        validate_settings({"width": 30, "height": 33, "fps": 0})
    assert len(err.value.errors) == 3


def test_researchers_can_add_presets_in_their_own_file(tmp_path, monkeypatch):
    extra = tmp_path / "mine.toml"
    extra.write_text('[toonyou-lightning]\nkind = "animatediff"\nadapter_repo = "ByteDance/AnimateDiff-Lightning"\n'
                     'adapter_file = "animatediff_lightning_2step_diffusers.safetensors"\n'
                     'scheduler = "EulerDiscreteScheduler"\nsteps = 2\nguidance = 1.0\n')
    monkeypatch.setenv("BLINDPAIR_PRESETS_FILE", str(extra))
    assert get_preset("toonyou-lightning").steps == 2
    assert "animatediff" in all_presets()
    extra.write_text('[broken]\nkind = "animatediff"\nscheduler = "DDIMScheduler"\n')
    monkeypatch.setenv("BLINDPAIR_PRESETS_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(GenerationConfigError, match="cannot read presets file"):
        all_presets()
    monkeypatch.setenv("BLINDPAIR_PRESETS_FILE", str(extra))
    with pytest.raises(GenerationConfigError, match="give either adapter"):
        all_presets()


# --- today's video families ------------------------------------------------------------------------------------------

from worker.presets import (  # noqa: E402
    FAMILIES,
    fit_warnings,
    installed_pipeline_classes,
    mixed_family_note,
    plan_memory,
    teacher_student_pairs,
)

FAMILY_PRESET = {"wan": "wan2.1-t2v-14b", "ltx": "ltx-video-0.9.7-dev", "hunyuanvideo": "hunyuanvideo",
                 "cogvideox": "cogvideox-5b", "mochi": "mochi-1-preview"}


def test_every_family_has_a_teacher_and_at_least_four_have_a_student_with_a_card():
    pairs = teacher_student_pairs()
    with_student = {t.family for t, s in pairs if s and t.family != "animatediff"}
    assert with_student == {"wan", "ltx", "hunyuanvideo", "cogvideox"}
    for teacher, students in pairs:
        for p in (teacher, *students):
            assert p.card.startswith("https://huggingface.co/"), p.name
            assert p.kind == "animatediff" or p.memory_gb, p.name
        assert all(s.family == teacher.family for s in students)


def test_every_preset_names_a_pipeline_class_and_call_arguments_the_installed_diffusers_has():
    import inspect

    import diffusers

    assert installed_pipeline_classes() and "WanPipeline" in installed_pipeline_classes()
    for p in (p for p in all_presets().values() if p.kind == "diffusers"):
        cls = getattr(diffusers, p.pipeline)
        params = inspect.signature(cls.__call__).parameters
        assert set(p.call_args) <= set(params), (p.name, set(p.call_args) - set(params))
        if p.guidance_2 is not None:
            assert "guidance_scale_2" in params
        if p.scheduler:
            assert hasattr(diffusers, p.scheduler), p.name


def test_the_cards_settings_are_the_presets():
    wan = get_preset("wan2.1-t2v-14b")
    assert (wan.steps, wan.guidance, wan.scheduler_config["flow_shift"]) == (50, 5.0, 3.0)
    assert wan.component_dtypes == {"vae": "float32"}
    lightx2v = get_preset("wan2.1-t2v-14b-lightx2v-4step")
    assert (lightx2v.steps, lightx2v.guidance, lightx2v.scheduler_config["flow_shift"]) == (4, 1.0, 5.0)
    assert lightx2v.weights == wan.weights and lightx2v.loras[0].repo.startswith("lightx2v/")
    wan22 = get_preset("wan2.2-t2v-a14b")
    assert (wan22.steps, wan22.guidance, wan22.guidance_2) == (40, 4.0, 3.0)
    lightning = get_preset("wan2.2-t2v-a14b-lightning-4step")
    assert [lo.target for lo in lightning.loras] == ["transformer", "transformer_2"]
    assert (lightning.steps, lightning.guidance, lightning.guidance_2) == (4, 1.0, 1.0)
    distilled = get_preset("ltx-video-0.9.7-distilled")
    assert distilled.call_args["timesteps"] == [1000, 993, 987, 981, 975, 909, 725, 0.03] and distilled.guidance == 1
    assert get_preset("ltx-video-0.9.7-dev").call_args["decode_timestep"] == 0.05
    fast = get_preset("fasthunyuan-6step")
    assert (fast.steps, fast.scheduler_config["shift"], fast.guidance) == (6, 17.0, 6.0)
    assert get_preset("hunyuanvideo").scheduler_config["shift"] == 7.0
    assert get_preset("cogvideox-5b").call_args == {"use_dynamic_cfg": True}
    assert (get_preset("mochi-1-preview").steps, get_preset("mochi-1-preview").guidance) == (64, 4.5)


@pytest.mark.parametrize(("family", "native"), [
    ("wan", (81, 832, 480, 16)), ("ltx", (161, 768, 512, 24)), ("hunyuanvideo", (129, 1280, 720, 24)),
    ("cogvideox", (49, 720, 480, 8)), ("mochi", (163, 848, 480, 30)),
])
def test_a_study_defaults_to_its_teachers_native_settings(family, native):
    settings = validate_settings(None, presets=[FAMILY_PRESET[family]])
    assert (settings["frames"], settings["width"], settings["height"], settings["fps"]) == native
    assert settings["dtype"] == "bfloat16"
    spec = resolve_run(model_name="m", preset=FAMILY_PRESET[family], overrides={}, settings=None)
    assert (spec.frames, spec.width, spec.height, spec.fps) == (*native[:3], float(native[3]))


def test_the_teacher_sets_the_defaults_whatever_the_order_and_a_mixed_study_says_so():
    settings = validate_settings(None, presets=["wan2.1-t2v-14b-lightx2v-4step", "ltx-video-0.9.7-dev"])
    assert (settings["frames"], settings["width"]) == (161, 768)  # the teacher's (LTX); 161 = 4*40+1 suits Wan
    note = mixed_family_note(["wan2.1-t2v-14b-lightx2v-4step", "ltx-video-0.9.7-dev"])
    assert "mixes families" in note and "161 frames at 768x512, 24 fps" in note and "81 frames at 832x480" in note
    assert mixed_family_note(["wan2.1-t2v-14b", "wan2.1-t2v-14b-lightx2v-4step"]) == ""


@pytest.mark.parametrize(("preset", "settings", "needle"), [
    ("wan2.1-t2v-14b", {"frames": 80},
     "Wan 2.1 / 2.2 (Wan-AI) makes 4k+1, at most 257 frames, not 80; nearest: 77 or 81"),
    ("wan2.1-t2v-14b", {"width": 840}, "width must be a multiple of 16 for Wan 2.1 / 2.2 (Wan-AI) (its VAE and "
                                       "patching), not 840; nearest: 832 or 848"),
    ("ltx-video-0.9.7-dev", {"frames": 100}, "makes 8k+1, at most 257 frames, not 100; nearest: 97 or 105"),
    ("ltx-video-0.9.7-dev", {"height": 500}, "height must be a multiple of 32 for LTX-Video (Lightricks) (its VAE "
                                             "and patching), not 500; nearest: 480 or 512"),
    ("cogvideox-5b", {"frames": 81}, "makes 4k+1, at most 49 frames, not 81; nearest: 49"),
    ("mochi-1-preview", {"frames": 160}, "makes 6k+1, at most 259 frames, not 160; nearest: 157 or 163"),
    ("hunyuanvideo", {"frames": 128}, "not 128; nearest: 125 or 129"),
    ("animatediff", {"frames": 80}, "makes 1 to 64 frames, not 80; nearest: 64"),
    ("animatediff", {"width": 500}, "width must be a multiple of 8 for AnimateDiff"),
])
def test_settings_a_family_cannot_make_are_refused_with_the_nearest_valid_values(preset, settings, needle):
    with pytest.raises(GenerationConfigError) as err:
        resolve_run(model_name="m", preset=preset, overrides={}, settings=settings)
    assert needle in str(err.value)


def test_guidance_2_is_wan_22s_alone():
    spec = resolve_run(model_name="m", preset="wan2.2-t2v-a14b", overrides={"guidance_2": 2, "off_card": True},
                       settings=None)
    assert (spec.guidance, spec.guidance_2) == (4.0, 2.0)
    assert spec.off_card == ("guidance_2 2.0 (card: 3.0)",)
    with pytest.raises(GenerationConfigError, match=r"guidance_2 2.0 \(card: 3.0\) leaves the card"):
        resolve_run(model_name="m", preset="wan2.2-t2v-a14b", overrides={"guidance_2": 2}, settings=None)
    with pytest.raises(GenerationConfigError, match="cannot override guidance_2: preset 'wan2.1-t2v-14b' has no"):
        resolve_run(model_name="m", preset="wan2.1-t2v-14b", overrides={"guidance_2": 2}, settings=None)


BASE = ('kind = "diffusers"\nfamily = "wan"\npipeline = "WanPipeline"\nweights = "Wan-AI/x"\nsteps = 4\n'
        'memory_gb = { transformer = 1 }\n')


@pytest.mark.parametrize(("body", "needle"), [
    (BASE.replace('"WanPipeline"', '"WanPipelin"'),
     "the installed diffusers has no pipeline class 'WanPipelin' (did you mean WanPipeline"),
    (BASE.replace('"WanPipeline"', '"WanPipelin"'), "known text-to-video classes: AnimateDiffPipeline, WanPipeline, "
                                                    "LTXPipeline, LTXConditionPipeline"),
    (BASE.replace('"WanPipeline"', '"MochiPipeline"'), "pipeline MochiPipeline does not make Wan 2.1 / 2.2"),
    (BASE.replace('family = "wan"', 'family = "sora"'), "family must be one of wan, ltx, hunyuanvideo"),
    (BASE.replace('weights = "Wan-AI/x"\n', ''), "weights must name a Hugging Face repo id or a local folder"),
    (BASE.replace("memory_gb = { transformer = 1 }\n", ""), "memory_gb must state the estimate"),
    (BASE.replace('"WanPipeline"', '"LTXPipeline"').replace('"wan"', '"ltx"') + 'guidance_2 = 2.0\n',
     "guidance_2 is Wan 2.2's second guidance"),
    (BASE + 'call_args = { timesteps = [1000, 500] }\n', "call_args.timesteps has 2 entries but steps is 4"),
    (BASE + 'call_args = { num_frames = 9 }\n', "call_args may not set num_frames"),
    (BASE + 'transformer_file = "t.safetensors"\n', "transformer_subfolder/transformer_file need transformer"),
    (BASE + 'loras = [{ repo = "a/b", file = "x.bin" }]\n', "LoRA 1 needs file, a .safetensors state dict"),
    (BASE + 'loras = [{ repo = "a/b", file = "x.safetensors", target = "unet" }]\n',
     "LoRA 1 target must be transformer or transformer_2"),
    (BASE + 'loras = [{ repo = "a/b", file = "x.safetensors", scale = 0 }]\n', "LoRA 1 scale must be a number above 0"),
    (BASE + 'component_dtypes = { vae = "fp8" }\n', "component_dtypes.vae must be one of float16"),
    (BASE + 'teacher = "nobody"\n', "its teacher 'nobody' is not a preset"),
    (BASE + 'teacher = "mochi-1-preview"\n', "its teacher 'mochi-1-preview' is of family 'mochi', not 'wan'"),
])
def test_bad_diffusers_presets_are_refused_in_words(tmp_path, monkeypatch, body, needle):
    extra = tmp_path / "mine.toml"
    extra.write_text("[mine]\n" + body)
    monkeypatch.setenv("BLINDPAIR_PRESETS_FILE", str(extra))
    with pytest.raises(GenerationConfigError) as err:
        all_presets()
    assert needle in str(err.value)


def test_a_good_preset_of_ones_own_loads(tmp_path, monkeypatch):
    extra = tmp_path / "mine.toml"
    extra.write_text("[mine]\n" + BASE + 'role = "student"\nteacher = "wan2.1-t2v-14b"\n'
                     'loras = [{ repo = "/loras", file = "x.safetensors", scale = 0.75 }]\n')
    monkeypatch.setenv("BLINDPAIR_PRESETS_FILE", str(extra))
    p = get_preset("mine")
    assert p.loras[0].scale == 0.75 and p.family_info is FAMILIES["wan"]


# --- memory: the plan per GPU, and the study page's warning ----------------------------------------------------------

@pytest.mark.parametrize(("preset", "gpu_gb", "offload", "fits"), [
    ("wan2.1-t2v-14b", 141, "none", True),              # H200: 46.5 GB resident fits
    ("wan2.2-t2v-a14b", 141, "none", True),             # both experts resident: 75.1 GB
    ("wan2.2-t2v-a14b", 80, "model_cpu_offload", True),  # H100: one 28.6 GB expert at a time
    ("hunyuanvideo", 64, "model_cpu_offload", True),    # 25.6 GB transformer + 20 GB activations
    ("hunyuanvideo", 48, "group_offload", True),
    ("hunyuanvideo", 24, "group_offload", True),
    ("hunyuanvideo", 16, "group_offload", False),        # 21 GB of activations at 129x1280x720
    ("cogvideox-2b", 24, "none", True),                 # 21.3 GB resident
    ("cogvideox-2b", 20, "model_cpu_offload", True),    # the 9.5 GB text encoder is the largest component
])
def test_the_memory_plan_follows_the_stated_estimate(preset, gpu_gb, offload, fits):
    p = get_preset(preset)
    f = p.family_info
    plan = plan_memory(p, gpu_gb=gpu_gb, frames=f.frames, width=f.width, height=f.height)
    assert (plan.offload, plan.fits) == (offload, fits), plan
    assert plan.vae_tiling == (p.vae_tiling or offload != "none")
    assert plan.estimate_gb <= gpu_gb * 0.9 or not fits


def test_activations_scale_with_the_clip():
    p = get_preset("hunyuanvideo")
    small = plan_memory(p, gpu_gb=16, frames=33, width=640, height=352)
    assert small.fits and small.offload == "group_offload"


def test_the_study_page_warns_when_a_model_cannot_fit_any_connected_gpu():
    specs = [(name, resolve_run(model_name=name, preset=preset, overrides={}, settings=None))
             for name, preset in (("teacher", "hunyuanvideo"), ("student", "fasthunyuan-6step"))]
    warnings = fit_warnings(specs, [("w1", 16.0), ("w2", 12.0)])
    assert len(warnings) == 2 and "cannot fit the connected workers' GPUs (largest 16 GB)" in warnings[0]
    assert "lower frames or size" in warnings[0]
    slower = fit_warnings(specs, [("w1", 80.0)])
    assert all("runs with model cpu offload on a 80 GB GPU" in w for w in slower)
    assert fit_warnings(specs, [("w1", 141.0)]) == [] and fit_warnings(specs, []) == []
