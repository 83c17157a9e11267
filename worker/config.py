"""Worker-only settings (env prefix ``BLINDPAIR_WORKER_``); the shared ones live in app.config."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLINDPAIR_WORKER_", env_file=".env", extra="ignore")

    device: str = ""  # cuda | cpu | cuda:N; empty = cuda when available
    # A running clip's worker writes a heartbeat this often; a clip silent for lease_seconds is taken back.
    heartbeat_seconds: float = 10.0
    lease_seconds: float = 120.0
    sweep_seconds: float = 30.0
    # Clips a worker died on this many times are failed instead of handed out again (a clip that kills workers).
    max_attempts: int = 3
    max_retries: int = 3  # Celery retries for transient errors, with exponential backoff
    retry_backoff_seconds: float = 10.0
    # Redis: an unacknowledged message goes back to the queue after this long (kombu's visibility_timeout).
    visibility_timeout: int = 3600
    exit_when_idle: bool = False  # stop once no clip is queued or running (the demo, batch jobs on rented GPUs)


def worker_settings() -> WorkerSettings:
    return WorkerSettings()
