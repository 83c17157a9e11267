"""``blindpair`` command line (Typer)."""

from app.cli import analyze, db, demo, media, metrics, prompts, serve, storage, studies, users, worker  # noqa: F401
from app.cli.base import app


def main() -> None:
    app()
