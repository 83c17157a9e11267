"""CLI: ``blindpair user add``, ``blindpair user password`` and ``blindpair user list``."""

from __future__ import annotations

import typer

from app.cli.base import user_app
from app.cli.serve import require_migrated
from app.db import session_scope
from app.passwords import ROLES
from app.services.users import (
    MIN_PASSWORD_LENGTH,
    UserError,
    create_user,
    get_user_by_email,
    list_users,
    normalise_email,
    set_password,
)


@user_app.command("add")
def user_add(
    email: str = typer.Argument(..., help="The login email, e.g. you@lab.org."),
    role: str = typer.Option("researcher", help=f"One of: {', '.join(ROLES)}. Admins also manage users."),
    password: str = typer.Option(
        None, help=f"At least {MIN_PASSWORD_LENGTH} characters. Asked for (hidden) when left out, which keeps "
        "it out of your shell history."
    ),
) -> None:
    """Create a researcher or admin account."""
    require_migrated()
    if role not in ROLES:
        typer.secho(f"Unknown role '{role}': use one of {', '.join(ROLES)}.", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope() as session:
            user = create_user(session, email=email, password=password, role=role)
            shown = f"{user.email} ({user.role})"
    except UserError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"Created {shown}. Log in at /login.")


@user_app.command("password")
def user_password(
    email: str = typer.Argument(..., help="The account's login email."),
    password: str = typer.Option(
        None, help=f"At least {MIN_PASSWORD_LENGTH} characters. Asked for (hidden) when left out."
    ),
) -> None:
    """Set a new password for an account and log it out everywhere (a forgotten or leaked password)."""
    require_migrated()
    with session_scope() as session:
        known = get_user_by_email(session, email) is not None
    if not known:
        typer.secho(f"No account has the email {normalise_email(email)}; see `blindpair user list`.",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    if password is None:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope() as session:
            user = get_user_by_email(session, email)
            if user is None:
                raise UserError(f"No account has the email {normalise_email(email)}.")
            set_password(session, user_id=user.id, password=password)
            shown = user.email
    except UserError as exc:
        typer.secho(f"{exc} Nothing was changed.", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"New password set for {shown}; every login of the account has been logged out.")


@user_app.command("list")
def user_list() -> None:
    """Show every account and its role."""
    require_migrated()
    with session_scope() as session:
        users = [(u.email, u.role) for u in list_users(session)]
    if not users:
        typer.echo("No accounts yet. Create an admin with: blindpair user add you@lab.org --role admin")
    for email, role in users:
        typer.echo(f"{email}\t{role}")
