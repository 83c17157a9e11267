"""The worker's view of the one settings class (``app.config.Settings``, env ``BLINDPAIR_WORKER_*``)."""

from __future__ import annotations

from types import SimpleNamespace

from app.config import Settings

PREFIX = "worker_"


def worker_settings() -> SimpleNamespace:
    """The ``worker_*`` settings without their prefix, read afresh (the CLI sets some through the environment)."""
    settings = Settings()
    fields = [name for name in type(settings).model_fields if name.startswith(PREFIX)]
    return SimpleNamespace(**{name[len(PREFIX):]: getattr(settings, name) for name in fields})
