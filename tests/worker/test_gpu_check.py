"""scripts/gpu_check.py runs end to end at a tiny size on the CPU (the full size needs a GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_the_cpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--tiny", "--runs", "1", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["presets"].keys() == {"animatediff", "lightning"}
    ad, light = out["presets"]["animatediff"], out["presets"]["lightning"]
    assert (ad["unet_evals"], light["unet_evals"]) == (2, 1)  # 1 step each: CFG doubles AnimateDiff's passes
    assert (ad["scheduler"], light["scheduler"]) == ("DDIMScheduler", "EulerDiscreteScheduler")
    assert ad["seconds_per_clip"] > 0 and out["speedup_ideal_unet_evals"] == 2.0
    assert "speedup Lightning vs AnimateDiff" in capsys.readouterr().out


def test_gpu_check_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit, match="No CUDA GPU here"):
        module.main(["--runs", "1"])
