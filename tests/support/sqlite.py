"""SQLite lock probes for tests that check a long step runs outside the write transaction."""

from __future__ import annotations

import sqlite3


def write_lock_is_free(db_path: str) -> bool:
    """Whether another connection (another process, say a vote) could start writing right now."""
    conn = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
