"""Panels that feature modules add to the study page without the page knowing them.

A panel is ``fn(session, study) -> (template_name, context)``; the study page renders each in order.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from app.models import Study

Panel = Callable[[Session, Study], tuple[str, dict]]
STUDY_PANELS: list[Panel] = []


def study_panel(fn: Panel) -> Panel:
    STUDY_PANELS.append(fn)
    return fn


def render_panels(session: Session, study: Study) -> list[tuple[str, dict]]:
    return [panel(session, study) for panel in STUDY_PANELS]
