"""CLI: database schema commands."""

import typer

from app.cli.base import db_app
from app.migrate import upgrade


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Apply the schema migrations to the configured database."""
    url = upgrade(revision)
    typer.echo(f"Database is at revision {revision}: {url}")
