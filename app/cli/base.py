"""The Typer application and its command groups; commands live in sibling modules."""

import typer

app = typer.Typer(help="BlindPair: blind pairwise evaluation of text-to-video models.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Researcher and admin accounts.", no_args_is_help=True)
study_app = typer.Typer(help="Studies.", no_args_is_help=True)
prompts_app = typer.Typer(help="Prompt suites.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(study_app, name="study")
app.add_typer(prompts_app, name="prompts")
