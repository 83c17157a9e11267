"""A process's CPU time from /proc (Linux): what the benchmarks charge the server under test.

Read by the benchmark driver and by the load generator (bench/loadgen.py), which marks the server's CPU at the
edges of its measured window, so joining an evaluator pool or a warm-up is not charged to the votes measured.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat(5))


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its descendants (gunicorn's worker is a child of its
    master; uvicorn with one worker is a single process), from /proc."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    total = own
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(c) for c in children.read_text().split()]
        except OSError:
            continue
        total += sum(t for t in (tree_cpu_seconds(k) for k in kids) if t is not None)
    return total
