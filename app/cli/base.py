"""The Typer application and its command groups; commands live in sibling modules."""

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(help="BlindPair: blind pairwise evaluation of text-to-video models.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Researcher and admin accounts.", no_args_is_help=True)
study_app = typer.Typer(help="Studies.", no_args_is_help=True)
prompts_app = typer.Typer(help="Prompt suites.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(study_app, name="study")
app.add_typer(prompts_app, name="prompts")


def counted_progress(console: Console, *, show: bool) -> Progress:
    """The bar of a long CLI step: its description, done of total and the time left; gone once finished."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, disable=not show, transient=True)
