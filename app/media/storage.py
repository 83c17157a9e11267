"""Media storage: files live under opaque random names inside one folder, written atomically."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.config import get_settings


@dataclass(frozen=True)
class StoredFile:
    storage_name: str
    sha256: str
    size_bytes: int


def media_root() -> Path:
    root = get_settings().resolved_media_dir
    root.mkdir(parents=True, exist_ok=True)
    return root


def media_path(storage_name: str) -> Path:
    """Resolve a stored name to its path; a name that would leave the media folder is refused."""
    root = media_root()
    path = (root / storage_name).resolve()
    if path.parent != root or not storage_name or "/" in storage_name or "\\" in storage_name:
        raise ValueError(f"invalid media name {storage_name!r}")
    return path


def store_bytes(data: bytes, suffix: str = ".gif") -> StoredFile:
    """Write ``data`` under a fresh random name: temp file, fsync, rename, fsync of the folder.

    No reader ever sees a half file (the rename is atomic), and once this returns the file survives a crash of
    the machine: fsync(2) says syncing a file does not sync its directory entry, so without the folder's fsync a
    power cut could lose the rename while the database row that names the file (committed next) survives.
    """
    root = media_root()
    name = secrets.token_hex(16) + suffix
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, root / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(root)
    return StoredFile(name, hashlib.sha256(data).hexdigest(), len(data))


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder to fsync it
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
