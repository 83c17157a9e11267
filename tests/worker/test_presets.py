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
