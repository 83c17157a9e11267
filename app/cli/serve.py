"""CLI: ``blindpair serve`` — refuse an out-of-date database, hint at a first admin, then run uvicorn."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlsplit

import typer
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from app.cli.base import app
from app.concurrency import SUGGESTED_LIMIT_CONCURRENCY
from app.config import get_settings
from app.migrate import alembic_config

UPGRADE_HINT = "Run `blindpair db upgrade` to bring it up to date, then try again."
ADMIN_HINT = "No admin account yet. Create one with:  blindpair user add you@lab.org --role admin"


def migration_problem(url: str | None = None) -> str | None:
    """Why the database at ``url`` (default: the configured one) is not at the code's migration head, or None."""
    url = url or get_settings().resolved_database_url
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername.startswith("sqlite") and parsed.database and not Path(parsed.database).exists():
        # Connecting would create an empty file and hide the mistake (e.g. a wrong BLINDPAIR_DATA_DIR).
        return f"There is no database at {shown} yet. {UPGRADE_HINT}"
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        return (f"Cannot read the database at {shown}: {reason}. "
                "Check BLINDPAIR_DATABASE_URL and that the database server is running.")
    finally:
        engine.dispose()
    if current == heads:
        return None
    if not current:
        return f"The database at {shown} has no BlindPair schema (no migration applied). {UPGRADE_HINT}"
    unknown = current - set(_known_revisions(url))
    if unknown:
        return (f"The database at {shown} is at revision {', '.join(sorted(unknown))}, which this version of "
                "BlindPair does not know: it was migrated by a newer version. Upgrade BlindPair instead.")
    return (f"The database at {shown} is at revision {', '.join(sorted(current))} but this version of BlindPair "
            f"needs {', '.join(sorted(heads))}. {UPGRADE_HINT}")


def _known_revisions(url: str) -> list[str]:
    return [rev.revision for rev in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()]


def require_migrated() -> None:
    """Stop a command with a clear message (exit code 2) if the database is not at the migration head."""
    problem = migration_problem()
    if problem:
        typer.secho(problem, fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)


def admin_hint() -> str | None:
    """How to make the first admin, or None if there is one."""
    from app.db import session_scope
    from app.services.users import count_admins

    with session_scope() as session:
        return None if count_admins(session) else ADMIN_HINT


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Address to listen on (default: BLINDPAIR_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default: BLINDPAIR_PORT, 8000)."),
    reload: bool = typer.Option(False, "--reload", help="Restart on code changes (development only)."),
) -> None:
    """Run the web app (pages, evaluator links and the JSON API) with uvicorn."""
    import uvicorn
    from pydantic import ValidationError

    try:
        settings = get_settings()
    except ValidationError as exc:  # e.g. production without BLINDPAIR_SECRET_KEY: say so, without a traceback
        for error in exc.errors():
            typer.secho(str(error["msg"]).removeprefix("Value error, "), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    require_migrated()
    hint = admin_hint()
    if hint:
        typer.secho(hint, fg=typer.colors.YELLOW)
    host = host or settings.host
    port = port or settings.port
    typer.echo(f"BlindPair on http://{host}:{port}")
    if urlsplit(settings.base_url).port != port:
        # Invite links are built from the base URL, not from the request, so a proxy cannot rewrite them.
        typer.secho(f"Invite links use BLINDPAIR_BASE_URL={settings.base_url}; set it to the address evaluators "
                    "reach this server at.", fg=typer.colors.YELLOW)
    # Requests in flight stay below the thread pool (app/concurrency.py), so a commit always finds a thread.
    # proxy_headers=False: uvicorn would believe X-Forwarded-For from loopback (its default), letting anyone
    # on this host pick their address; the app honours it only from BLINDPAIR_FORWARDED_ALLOW_IPS instead.
    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, reload=reload, proxy_headers=False,
                limit_concurrency=SUGGESTED_LIMIT_CONCURRENCY,
                # On SIGTERM/SIGINT, requests in flight get this long; then uvicorn cancels them and exits. Without
                # it a slow client (a body that never finishes) kept the server from stopping at all.
                timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_seconds)))
