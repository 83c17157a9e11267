"""The canonical GIF writer's cost: re-encoding a stored clip (what the media route does once for a clip stored
before the writer existed) and growing it to its prompt's length (once per prompt per process). No assertions.

Usage: .venv/bin/python -m bench.canonical [--frames 16] [--size 512] [--repeat 3]
Clips come from ``bench.metrics.clips`` (the real AnimateDiff GIFs upscaled, when ../shared is present, and a
synthetic pan), written by Pillow as an older import would have stored them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from app.media import canonical
from bench.common import describe_machine, machine
from bench.metrics import _gif, clips


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"Machine: {describe_machine(machine())}\n")
    print(f"| clip ({args.frames} frames, {args.size}px) | stored bytes | re-encode s | canonical bytes "
          "| grow by 20% s |\n|---|---|---|---|---|")
    for name, frames in clips(args.frames, args.size, limit=4):
        stored = _gif(frames)
        seconds = _best(lambda data=stored: canonical.canonicalize(data), args.repeat)
        out = canonical.canonicalize(stored)
        targets = [int(n * 1.2) + 1 for n in canonical.frame_data_lengths(out)]
        grow = _best(lambda data=out, t=targets: canonical.pad_frames(data, t), args.repeat)
        print(f"| {name} | {len(stored):,} | {seconds:.3f} | {len(out):,} | {grow:.4f} |")


if __name__ == "__main__":
    main()
