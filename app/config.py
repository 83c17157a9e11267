"""One settings object for the web app, the CLI and the worker (env prefix ``BLINDPAIR_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "dev-insecure-secret-key"}


class Settings(BaseSettings):
    """Defaults run on a laptop: a SQLite file, an embedded broker, a local media folder."""

    model_config = SettingsConfigDict(env_prefix="BLINDPAIR_", env_file=".env", extra="ignore")

    environment: str = "development"  # development | test | production
    data_dir: Path = Path("var")
    database_url: str = ""  # default: sqlite file in data_dir
    media_dir: Path | None = None  # default: data_dir/media
    broker_url: str = ""  # default: kombu's SQLAlchemy transport on a SQLite file in data_dir
    secret_key: str = "dev-insecure-secret-key"
    base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    # Where the worker finds weights: a Hugging Face cache folder; HF_HUB_OFFLINE is honoured as usual.
    model_cache_dir: Path | None = None
    hf_offline: bool = False
    # Worker (env BLINDPAIR_WORKER_*). A running clip's worker writes a heartbeat every heartbeat_seconds;
    # a clip silent for lease_seconds is taken back by another worker's sweeper (every sweep_seconds).
    worker_device: str = ""  # cuda | cpu | cuda:N; empty = cuda when available
    worker_heartbeat_seconds: float = 10.0
    worker_lease_seconds: float = 120.0
    worker_sweep_seconds: float = 30.0
    # Clips a worker died on this many times are failed instead of handed out again (a clip that kills workers).
    worker_max_attempts: int = 3
    worker_max_retries: int = 3  # Celery retries for transient errors, with exponential backoff
    worker_retry_backoff_seconds: float = 10.0
    # Redis: an unacknowledged message goes back to the queue after this long (kombu's visibility_timeout).
    worker_visibility_timeout: int = 3600
    # A clip queued this long while the broker's queue is empty lost its message; the sweeper sends it again.
    # Longer than the longest retry backoff (worker_retry_backoff_seconds x 2^(max_retries - 1) x 1.5).
    worker_orphan_seconds: float = 600.0
    worker_exit_when_idle: bool = False  # stop once no clip is queued or running (the demo, rented GPUs)
    max_upload_bytes: int = 50 * 1024 * 1024
    # Every request body is refused (413) beyond this size, before it is parsed; the routes that take a file
    # or a study's prompt list allow max_upload_bytes plus 1 MiB for the form around it (app/middleware.py).
    max_body_bytes: int = 1024 * 1024
    # Untrusted GIFs (imports, attention-check copies) are checked from their headers before any decoding
    # (app/media/budget.py): canvas side, frame count, and width x height x frames, which bounds decoding
    # memory at about 4 bytes per pixel of the budget.
    gif_max_side: int = 2048
    gif_max_frames: int = 1000
    gif_max_pixels: int = 32 * 1024 * 1024  # e.g. 128 frames of 512x512, or 32 of 1024x1024
    # SQLite: how long a write waits for the write lock before its request answers 503 with Retry-After
    # (reads and media never wait: they read a WAL snapshot). Also the busy timeout of every connection.
    db_lock_timeout_seconds: float = 10.0
    # blindpair serve / demo: after SIGTERM or SIGINT, requests in flight get this long before connections are
    # closed, and the demo's worker this long to finish its clip before it is killed.
    shutdown_grace_seconds: float = 10.0
    join_rate_limit_per_minute: int = 30
    secure_cookies: bool = False

    @field_validator("environment")
    @classmethod
    def _known_environment(cls, value: str) -> str:
        if value not in {"development", "test", "production"}:
            raise ValueError("BLINDPAIR_ENVIRONMENT must be development, test or production")
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.environment == "production" and (
            self.secret_key in PLACEHOLDER_SECRETS or len(self.secret_key) < 32
        ):
            raise ValueError(
                "BLINDPAIR_SECRET_KEY is missing or a placeholder. Outside development set it to a random "
                "string of 32+ characters, e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'blindpair.sqlite').resolve()}"

    @property
    def resolved_media_dir(self) -> Path:
        return (self.media_dir or self.data_dir / "media").resolve()

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
