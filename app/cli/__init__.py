"""``blindpair`` command line (Typer)."""

from app.cli import (  # noqa: F401
    analyze,
    db,
    demo,
    media,
    metrics,
    presets,
    prompts,
    serve,
    storage,
    studies,
    users,
    worker,
)
from app.cli.base import app


def main() -> None:
    app()
