"""CLI: ``blindpair presets`` lists every family's teacher and its students, with the card each copies."""

from __future__ import annotations

import typer

from app.cli.base import app
from worker.presets import FAMILIES, GenerationConfigError, Preset, all_presets, teacher_student_pairs


def _sampling(p: Preset) -> str:
    guidance = f"guidance {p.guidance:g}" + (f" / {p.guidance_2:g}" if p.guidance_2 is not None else "")
    lora = f", {len(p.loras)} LoRA" + ("s" if len(p.loras) > 1 else "") if p.loras else ""
    return f"{p.steps} steps, {guidance}{lora}"


def _memory(p: Preset) -> str:
    if not p.memory_gb:
        return ""
    f = p.family_info
    weights = sum(v for k, v in p.memory_gb.items() if k != "activations")
    return f"~{weights + p.memory_gb.get('activations', 0):.0f} GB at {f.frames}x{f.width}x{f.height} resident"


@app.command("presets")
def presets(all_: bool = typer.Option(False, "--all", help="Also list presets outside a teacher/student pair "
                                                           "(demo renderers, tiny test presets).")) -> None:
    """Every family's teacher and students: how each samples, the memory it needs, and its model card."""
    try:
        pairs = teacher_student_pairs()
    except GenerationConfigError as exc:
        for line in exc.errors:
            typer.secho(line, fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc
    family = ""
    for teacher, students in pairs:
        f = FAMILIES[teacher.family_info.key]
        if f.key != family:
            family = f.key
            typer.secho(f"\n{f.label}: native {f.frames} frames at {f.width}x{f.height}, {f.fps:g} fps; frames "
                        f"{f.frame_rule()}, sizes in multiples of {f.spatial}", bold=True)
        for role, p in [("teacher", teacher), *(("student", s) for s in students)]:
            typer.echo(f"  {role:8} {p.name:34} {_sampling(p):28} {_memory(p)}")
            typer.echo(f"  {'':8} {p.description}")
            if p.card:
                typer.echo(f"  {'':8} card: {p.card}")
        if not students:
            typer.echo(f"  {'':8} (no student ships for diffusers: see the notes in worker/presets.toml)")
    typer.echo("\nA study of one pair: blindpair study create --name NAME --model teacher:TEACHER "
               "--model student:STUDENT (frames, size, fps and dtype default from the teacher's family).")
    if all_:
        listed = {p.name for t, s in pairs for p in (t, *s)}
        typer.secho("\nOther presets:", bold=True)
        for p in sorted(all_presets().values(), key=lambda p: p.name):
            if p.name not in listed:
                typer.echo(f"  {p.name:34} {p.description}")
