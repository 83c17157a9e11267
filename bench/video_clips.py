"""MP4/WebM clips: encode time, size and bitrate at the study-wide settings, against the GIF path, on the demo
renderer's 16-frame 512x512 clips; and the serving step (padding a group of two clips).

    .venv/bin/python bench/video_clips.py [--clips 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from app.media import video
from app.media.demo_render import render_clip
from worker.gif import encode_clip_gif


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=4)
    args = parser.parse_args()
    prompts = ["a red kite over a hill", "waves on a pebble beach", "a city street at night", "snow in a forest"]
    rows: dict[str, list[tuple[float, int]]] = {"gif": [], "mp4": [], "webm": []}
    pad: dict[str, list[float]] = {"mp4": [], "webm": []}
    for i in range(args.clips):
        for style in ("smooth", "jittery"):
            frames = render_clip(prompts[i % 4], style=style, seed=i, frames=16, width=512, height=512)
            t = time.perf_counter()
            gif, _info, _lossy = encode_clip_gif(frames, fps=8)
            rows["gif"].append((time.perf_counter() - t, len(gif)))
            arrays = [np.asarray(f.convert("RGB")) for f in frames]
            for fmt in ("mp4", "webm"):
                t = time.perf_counter()
                data = video.encode(arrays, 8, fmt)
                rows[fmt].append((time.perf_counter() - t, len(data)))
                t = time.perf_counter()
                targets = video.padded_targets(fmt, [video.sample_sizes(data)] * 2)
                video.pad_samples(data, fmt, targets)
                pad[fmt].append(time.perf_counter() - t)
    print("| format | encode s (median) | size KB (median) | mean bitrate kbit/s | pad+remux s (median) |")
    print("|---|---|---|---|---|")
    for fmt, vals in rows.items():
        secs = statistics.median(v[0] for v in vals)
        size = statistics.median(v[1] for v in vals)
        pads = f"{statistics.median(pad[fmt]):.3f}" if fmt in pad else "—"
        print(f"| {fmt} | {secs:.2f} | {size / 1000:.0f} | {size * 8 / 2.0 / 1000:.0f} | {pads} |")


if __name__ == "__main__":
    main()
