"""Run one function in several threads at once and collect what they raised (for race tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_in_threads(target: Callable[[], None], n: int) -> list[BaseException]:
    """Start ``n`` threads on ``target``, wait for all, and return every exception they raised."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - returned to the test, which asserts on them
            errors.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
