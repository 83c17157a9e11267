"""Generation workers' devices: what each reported, and which GPUs are connected now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import WorkerDevice

# A worker that reported within this long counts as connected: workers report at start and with every clip, and a
# GPU worker waiting for a new study may sit idle for hours.
CONNECTED_WITHIN = timedelta(hours=24)


def record_worker_device(session: Session, *, worker: str, device: str, total_memory_bytes: int | None) -> None:
    """Insert or refresh this worker's row (the caller's transaction commits it)."""
    row = session.get(WorkerDevice, worker)
    now = datetime.now(UTC)
    if row is None:
        session.add(WorkerDevice(worker=worker, device=device[:200], total_memory_bytes=total_memory_bytes,
                                 seen_at=now))
    else:
        row.device, row.total_memory_bytes, row.seen_at = device[:200], total_memory_bytes, now


def connected_gpus(session: Session, *, within: timedelta = CONNECTED_WITHIN) -> list[tuple[str, float]]:
    """(worker, GPU memory in GB) of every GPU worker seen within ``within``; CPU workers are left out."""
    since = datetime.now(UTC) - within
    rows = session.execute(select(WorkerDevice.device, WorkerDevice.total_memory_bytes)
                           .where(WorkerDevice.seen_at >= since, WorkerDevice.total_memory_bytes.is_not(None)))
    return [(device, total / 1e9) for device, total in rows if total]
