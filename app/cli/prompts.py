"""CLI: prompts."""

from app.cli.base import app  # noqa: F401
