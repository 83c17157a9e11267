"""The one Jinja2 environment of the templates: pages render through it (app.templating) and so does the
self-contained HTML report (app.services.exports), which must not depend on the web framework."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The same loader and autoescaping as Starlette's Jinja2Templates(directory=...) would make.
env = Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), autoescape=select_autoescape())
