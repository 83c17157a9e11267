"""What every benchmark shares: the machine description, percentiles, timing, and the markdown/JSON writer."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def gpu_description() -> str:
    """The GPU by torch if it sees one, else by nvidia-smi, else 'none'."""
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    except Exception:  # torch missing or broken: fall through to nvidia-smi
        pass
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().replace("\n", "; ")
    return "none"


def load_average() -> str:
    return " ".join(_read("/proc/loadavg").split()[:3])


def machine() -> dict[str, Any]:
    """What the numbers were measured on (BENCHMARKS.md prints this beside every table)."""
    import sqlite3
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for pkg in ("fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg", "pandas", "numpy", "scipy", "torch",
                "diffusers", "pillow", "httpx"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "gpu": gpu_description(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_at_start": load_average(),
        "versions": versions,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; None for no values."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def timed(fn: Callable[[], Any], *, repeat: int = 1,
          clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    """Best time of ``repeat`` calls (seconds; wall time, or CPU with ``clock=time.process_time``) and the last
    result: the best run is the least disturbed by the other processes on this shared machine."""
    best, result = math.inf, None
    for _ in range(max(repeat, 1)):
        t0 = clock()
        result = fn()
        best = min(best, clock() - t0)
    return best, result


def loglog_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Slope of log(time) against log(size), by least squares: 1.0 is linear growth."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(sizes, seconds, strict=True) if n > 0 and t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Report:
    """One benchmark's outcome: markdown tables, notes in words, bars passed or not, and the raw numbers."""

    name: str
    title: str
    command: str
    params: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, str]] = field(default_factory=list)  # (caption, markdown table)
    notes: list[str] = field(default_factory=list)
    bars: list[tuple[str, bool | None, str]] = field(default_factory=list)  # (bar, passed, measured)
    data: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    def table(self, caption: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.tables.append((caption, md_table(headers, rows)))

    def bar(self, text: str, passed: bool | None, measured: str) -> None:
        self.bars.append((text, passed, measured))

    def markdown(self, *, with_machine: dict[str, Any] | None = None) -> str:
        out = [f"## {self.title}", "", f"Command: `{self.command}`  ", f"Run: {self.started_at}"]
        if with_machine:
            out.append(f"Machine: {describe_machine(with_machine)}")
        out.append("")
        for caption, table in self.tables:
            out += [f"**{caption}**", "", table, ""]
        if self.bars:
            out += ["| bar | measured | passes |", "|---|---|---|"]
            out += [f"| {b} | {m} | {'–' if p is None else ('yes' if p else '**no**')} |" for b, p, m in self.bars]
            out.append("")
        out += [f"- {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"

    def save(self, results_dir: Path = RESULTS_DIR) -> Path:
        results_dir.mkdir(parents=True, exist_ok=True)
        info = machine()
        payload = {"name": self.name, "title": self.title, "command": self.command, "started_at": self.started_at,
                   "machine": info, "params": self.params, "bars": self.bars, "notes": self.notes,
                   "data": self.data}
        (results_dir / f"{self.name}.json").write_text(json.dumps(payload, indent=1, default=str))
        path = results_dir / f"{self.name}.md"
        path.write_text(self.markdown(with_machine=info))
        return path


def describe_machine(info: dict[str, Any]) -> str:
    return (f"{info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, GPU: {info['gpu']}; "
            f"{info['os']}; load average at start {info['load_average_at_start']}")


def run_cli(module: str, parser: Callable[[], Any], run: Callable[[Any], Report], argv: list[str] | None,
            tiny: Callable[[list[str]], Any]) -> Report:
    """Every benchmark's entry point: parse (``--tiny`` expands to the module's small settings), run, then
    save the JSON and markdown under ``--results-dir``, print the tables and record the exact command."""
    args = parser().parse_args(argv)
    if args.tiny:
        args = tiny([a for a in (argv or []) if a != "--tiny"])
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    report = run(args)
    report.command = " ".join([f"python -m {module}", *(argv or [])])  # exactly what was run
    path = report.save(Path(args.results_dir))
    print(report.markdown())
    print(f"written: {path}")
    return report
