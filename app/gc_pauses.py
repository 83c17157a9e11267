"""Keep the cyclic garbage collector from pausing every request for the whole startup heap.

A web process holds about 220,000 objects once the app is built (SQLAlchemy, pydantic, pandas, scipy, the
templates), and none of them ever becomes garbage. Python's oldest-generation collection walks all of them
anyway: 110-190 ms with the GIL held, about every 4 s under 150 votes/s on the benchmark machine, and every
request in flight waited for it (bench/launch.py's open loop: those pauses were its p99).
``gc.freeze()`` at startup moves them to a permanent generation the collector skips; what the app allocates
while serving is still collected as before (https://docs.python.org/3/library/gc.html#gc.freeze, the
approach Instagram described for its Django servers).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

_frozen = False


def freeze_startup_heap() -> bool:
    """Collect once, then freeze what survives; only the first call in a process freezes (tests build many
    apps in one process, and each freeze would keep the previous apps' cycles forever). Returns whether it
    froze."""
    global _frozen
    if _frozen:
        return False
    gc.collect()
    gc.freeze()
    _frozen = True
    return True


def install_gc_freeze(app: FastAPI) -> None:
    """Freeze the heap once ``app`` has started (its lifespan), when everything it imports and builds exists."""
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(the_app: Any) -> AsyncIterator[Any]:
        async with previous(the_app) as state:
            freeze_startup_heap()
            yield state

    app.router.lifespan_context = lifespan
