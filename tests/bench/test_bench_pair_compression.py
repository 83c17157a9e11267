"""bench.pair_compression at its tiny size: one real pair when ../shared is there, a clean skip when it is not."""

from __future__ import annotations

import json
import shutil

import pytest

from bench.gif_encoding import SHARED_GIFS


def test_without_the_shared_folder_the_benchmark_says_it_skipped(tmp_path):
    from bench import pair_compression

    report = pair_compression.main(["--tiny", "--results-dir", str(tmp_path), "--source", str(tmp_path / "none")])
    assert report.tables == [] and "skipped" in report.notes[0]


@pytest.mark.skipif(not SHARED_GIFS.is_dir() or shutil.which("gifsicle") is None,
                    reason="needs ../shared/data/animatediff_gifs and gifsicle")
def test_a_real_pair_is_served_at_the_harsher_of_its_fits(tmp_path):
    from bench import pair_compression

    pair_compression.main(["--tiny", "--results-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "pair_compression.json").read_text())
    (pair,) = saved["data"]["pairs"]
    assert pair["pair_level"] == max(pair["fit_levels"])
    assert all(p is None or p > 20 for p in pair["psnr_paired"])  # PSNR in dB against the master, not a ratio
