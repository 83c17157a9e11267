"""CLI: ``blindpair study create``, ``list``, ``open``, ``close``, ``qc`` and ``share``."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from app.cli.base import study_app
from app.cli.serve import require_migrated
from app.config import get_settings
from app.db import session_scope
from app.services import studies as study_service
from app.services.prompts import PromptFileError, parse_prompt_file
from app.services.studies import ModelSpec, StudyError
from app.services.users import get_user_by_email, list_users, normalise_email
from worker.presets import mixed_family_note


def parse_model(value: str) -> ModelSpec:
    """``NAME`` or ``NAME:PRESET`` -> ModelSpec (the preset names a generation preset of the worker)."""
    name, _, preset = value.partition(":")
    return ModelSpec(name=name.strip(), preset=preset.strip())


def _fail(lines: list[str]) -> NoReturn:
    for line in lines:
        typer.secho(line, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _owner_id(email: str) -> int:
    with session_scope() as session:
        user = get_user_by_email(session, email)
        if user is None:
            _fail([f"No account has the email {normalise_email(email)}; nothing was created.",
                   "Create it first: blindpair user add EMAIL"])
        return user.id


@study_app.command("create")
def study_create(
    name: str = typer.Option(..., help="The study's name (shown to researchers only)."),
    model: list[str] = typer.Option(
        ..., "--model", help="A model as NAME or NAME:PRESET; give --model once per model (at least two)."
    ),
    theme: list[str] = typer.Option(
        None, "--theme", help="Use the built-in suite's prompts of this theme; repeat for several (default: all)."
    ),
    prompts: Path = typer.Option(
        None, "--prompts", exists=True, dir_okay=False, readable=True,
        help="A CSV or JSONL prompt file (id,text,theme[,detail,tags]) instead of the built-in suite.",
    ),
    votes_per_pair: int = typer.Option(5, help="Votes wanted for every pair."),
    pairs_per_session: int = typer.Option(10, help="Pairs one evaluator rates in a session."),
    description: str = typer.Option("", help="A note for researchers."),
    redirect_url: str = typer.Option("", help="Where evaluators go when done, e.g. a Prolific completion URL."),
    owner: str = typer.Option(
        "", "--owner", help="The email of the researcher who owns the study. Without it only admins see the study "
        "until it is shared (blindpair study share)."
    ),
    both_bad: bool = typer.Option(False, "--both-bad", help="Offer a fourth answer, 'Both are bad' (a tie in "
                                  "the statistics, told apart in the answers export)."),
    reason_tag: list[str] = typer.Option([], "--reason-tag", help="A reason evaluators may tick per pair "
                                         "(repeat the option; never required)."),
    comment: str = typer.Option("off", "--comment", help="A short comment per pair: off, optional or required."),
    clip_format: str = typer.Option(
        "gif", "--clip-format", help="What raters see: gif, mp4 (H.264) or webm (VP9); videos get the frame-locked "
        "player. Every clip, imported or generated, is stored in this format."
    ),
    pair_selection: str = typer.Option(
        "least_voted", "--pair-selection", help="How the next pair is chosen: least_voted, adaptive (3+ models: "
        "votes go where they narrow the widest rating intervals most) or arena_eq9 (Chatbot Arena's Eq. 9, for "
        "the win rates). Later: study qc --set."
    ),
) -> None:
    """Create a draft study and print its id and invite link."""
    require_migrated()
    if prompts and theme:
        _fail(["Give either --prompts FILE or --theme, not both."])
    owner_id = _owner_id(owner) if owner else None
    try:
        if prompts:
            specs = parse_prompt_file(prompts.read_bytes(), prompts.name)
        else:
            specs = study_service.builtin_prompts(theme or None)
    except PromptFileError as exc:
        _fail([f"{prompts} was refused, nothing was created:", *exc.errors])
    except StudyError as exc:
        _fail(exc.errors)
    try:
        with session_scope() as session:
            study = study_service.create_study(
                session, name=name, models=[parse_model(m) for m in model], prompts=specs,
                votes_per_pair=votes_per_pair, pairs_per_session=pairs_per_session, description=description,
                redirect_url=redirect_url, created_by_id=owner_id, settings={"clip_format": clip_format},
                answers={"both_bad": both_bad, "reason_tags": reason_tag, "comment": comment},
                qc={"pair_selection": pair_selection} if pair_selection != "least_voted" else None,
            )
            study_id, invite = study.id, study_service.invite_url(study)
            models = ", ".join(f"{m.name}{' (' + m.preset + ')' if m.preset else ''}" for m in study.models)
            gen = study.settings
            shared = (f"Every model makes {gen['frames']} frames at {gen['width']}x{gen['height']}, "
                      f"{gen['fps']:g} fps, {gen['dtype']}.")
            note = mixed_family_note([m.preset for m in study.models if m.preset])
    except StudyError as exc:
        _fail(["Nothing was created:", *exc.errors])
    base = get_settings().base_url.rstrip("/")
    typer.echo(f"Created study {study_id} ({len(specs)} prompts; models: {models}). It is a draft.")
    typer.echo(shared + (f" {note}" if note else ""))
    typer.echo(f"Study page:  {base}/studies/{study_id}  (open it there once clips are in)")
    typer.echo(f"Invite link: {invite}")


@study_app.command("list")
def study_list() -> None:
    """Show every study with its id, status, progress and owner."""
    require_migrated()
    with session_scope() as session:
        owners = {u.id: u.email for u in list_users(session)}
        for s in study_service.list_studies(session):
            p = study_service.study_progress(session, study_id=s.id, settle_qc=False)  # a list: what is stored
            owner = owners.get(s.created_by_id) if s.created_by_id else None
            typer.echo(f"{s.id}\t{s.status}\t{s.name}\t{p['votes']}/{p['votes_target']} votes\t"
                       f"{p['evaluators']} evaluators\towner: {owner or '(none: admins only)'}")


def _set_status(study_id: int, status: str) -> None:
    require_migrated()
    try:
        with session_scope() as session:
            study = study_service.set_status(session, study_id=study_id, status=status)
            name, invite = study.name, study_service.invite_url(study)
    except StudyError as exc:
        _fail(exc.errors)
    typer.echo(f"Study {study_id} ({name}) is {status}.")
    if status == "open":
        typer.echo(f"Invite link: {invite}")


@study_app.command("open")
def study_open(study_id: int = typer.Argument(..., help="The study's id (see `blindpair study list`).")) -> None:
    """Open a study to evaluators."""
    _set_status(study_id, "open")


@study_app.command("close")
def study_close(study_id: int = typer.Argument(..., help="The study's id (see `blindpair study list`).")) -> None:
    """Close a study: evaluators are turned away, results stay."""
    _set_status(study_id, "closed")


@study_app.command("qc")
def study_qc(
    study_id: int = typer.Argument(..., help="The study's id (see `blindpair study list`)."),
    setting: list[str] = typer.Option(
        None, "--set", help="KEY=VALUE, e.g. attention_rate=0.2 or enabled=false; repeatable. Without --set: show."
    ),
) -> None:
    """Show or change a study's quality-control settings (attention checks, too-fast votes, straight-lining)."""
    require_migrated()
    changes: dict[str, object] = {}
    for item in setting or []:
        key, sep, raw = item.partition("=")
        if not sep:
            _fail([f"--set {item!r}: write KEY=VALUE, e.g. --set attention_rate=0.2"])
        value: object = raw.strip()
        if value in ("true", "false"):
            value = value == "true"
        elif value in ("none", "null", ""):
            value = None
        changes[key.strip()] = value
    try:
        with session_scope() as session:
            if changes:
                effective = study_service.set_qc(session, study_id=study_id, changes=changes)
            else:
                study = study_service.get_study(session, study_id)
                if study is None:
                    raise StudyError(f"There is no study with id {study_id}.")
                from dataclasses import asdict

                from app.services.attention import qc_settings

                effective = asdict(qc_settings(study))
    except StudyError as exc:
        _fail(["Nothing was changed:", *exc.errors] if changes else exc.errors)
    for key, value in effective.items():
        typer.echo(f"{key} = {value}")


@study_app.command("share")
def study_share(
    study_id: int = typer.Argument(..., help="The study's id (see `blindpair study list`)."),
    email: list[str] = typer.Argument(None, help="Accounts to share the study with (or to stop sharing with)."),
    remove: bool = typer.Option(False, "--remove", help="Stop sharing with these accounts instead."),
) -> None:
    """Share a study with researchers (they see and run it like its owner), or stop; without emails: show who."""
    require_migrated()
    try:
        with session_scope() as session:
            study = study_service.get_study(session, study_id)
            if study is None:
                raise StudyError(f"There is no study with id {study_id}.")
            # The operator at the server's command line acts as an admin.
            for address in email or []:
                if remove:
                    user = get_user_by_email(session, address)
                    if user is None:
                        raise StudyError(f"No account has the email {normalise_email(address)}.")
                    study_service.remove_collaborator(session, study_id=study_id, user_id=user.id, by_user_id=0,
                                                      by_admin=True)
                else:
                    study_service.add_collaborator(session, study_id=study_id, email=address, by_user_id=0,
                                                   by_admin=True)
            owner = next((u.email for u in list_users(session) if u.id == study.created_by_id), None)
            shared = [u.email for u in study_service.list_collaborators(session, study_id=study_id)]
    except StudyError as exc:
        _fail(["Nothing was changed:", *exc.errors] if email else exc.errors)
    typer.echo(f"Study {study_id}: owner {owner or '(none: admins only)'}")
    typer.echo("Shared with: " + (", ".join(shared) if shared else "nobody"))
