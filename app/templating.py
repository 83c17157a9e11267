"""The Jinja2 templates of every HTML router, on the one environment in app.jinja_env."""

from __future__ import annotations

from fastapi.templating import Jinja2Templates

from app.jinja_env import STATIC_DIR as STATIC_DIR
from app.jinja_env import TEMPLATES_DIR as TEMPLATES_DIR
from app.jinja_env import env

templates = Jinja2Templates(env=env)
