"""The generation queue as the services see it: a port that the worker side fills in.

Services queue clips and ask whether the queue answers, but never import Celery or the worker package (the
import-linter contract in pyproject.toml forbids it): the task queue sits above them, next to the other
entry points. The worker's Celery queue is the default, named by its import path and loaded on first use,
so every process that queues clips (web, CLI, the worker's own sweeper) gets it without wiring;
``register`` puts another in its place (another broker library, or a test double).
"""

from __future__ import annotations

import importlib
from typing import Protocol

# "module:attribute" of the queue used when none is registered.
DEFAULT_QUEUE = "worker.celery_app:task_queue"


class TaskQueue(Protocol):
    def send_generate(self, clip_ids: list[int]) -> None:
        """Send one generation task per clip id (the worker reloads each clip row by id)."""

    def problem(self) -> str | None:
        """None if the queue answers, else a sentence saying what is wrong and what to do."""


_registered: TaskQueue | None = None


def register(queue: TaskQueue | None) -> None:
    """Use ``queue`` from now on (``None``: back to the default)."""
    global _registered
    _registered = queue


def current() -> TaskQueue:
    """The registered queue, or the default one loaded by its import path."""
    if _registered is not None:
        return _registered
    module_name, _, attribute = DEFAULT_QUEUE.partition(":")
    queue: TaskQueue = getattr(importlib.import_module(module_name), attribute)
    return queue
