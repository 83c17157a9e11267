"""One settings object for the web app, the CLI and the worker (env prefix ``BLINDPAIR_``)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values people paste from examples; a secret must also be 32+ characters.
PLACEHOLDER_SECRETS = {"change-me", "changeme", "secret", "secret-key", "your-secret-key"}
MIN_SECRET_LENGTH = 32
# Where a development or test install keeps the secret it generated on first run (inside data_dir).
SECRET_FILE = "secret_key"
GENERATE_SECRET_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


class SecretFileError(ValueError):
    """The generated secret in the data folder cannot be read or made; the message says what to do."""


def load_or_create_secret(data_dir: Path) -> str:
    """The secret kept in ``data_dir/secret_key``, generated (48 random bytes, file mode 0600) on first use.

    Made in a temporary file and hard-linked into place, so two processes starting at once (the server and a
    worker) end up with the same secret: the second link fails and that process reads the first one's file.
    """
    path = data_dir / SECRET_FILE
    if not path.exists():
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            _create_secret_file(path)
        except OSError as exc:
            raise SecretFileError(
                f"Cannot create the secret file {path} ({exc.strerror or exc}). Make {data_dir} writable, or set "
                f"BLINDPAIR_SECRET_KEY to 32+ random characters, e.g. from: {GENERATE_SECRET_HINT}") from exc
    try:
        secret = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"Cannot read the secret file {path} ({exc}). Fix its permissions, or delete it "
                              "to make a new one (this logs everyone out).") from exc
    if len(secret) < MIN_SECRET_LENGTH:
        raise SecretFileError(f"The secret file {path} holds fewer than {MIN_SECRET_LENGTH} characters. Delete it "
                              "and start again to make a new one (this logs everyone out).")
    return secret


def _create_secret_file(path: Path) -> None:
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)


def parse_forwarded_allow_ips(value: str) -> list[str]:
    """The proxies named in BLINDPAIR_FORWARDED_ALLOW_IPS: addresses or networks, comma-separated; '*' = any."""
    entries = [item.strip() for item in value.split(",") if item.strip()]
    bad = []
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            bad.append(entry)
    if bad:
        raise ValueError(
            f"BLINDPAIR_FORWARDED_ALLOW_IPS has {', '.join(repr(b) for b in bad)}, which is not an IP address or "
            "network. List your reverse proxy's addresses, e.g. 127.0.0.1 or 10.0.0.0/8, or leave it empty when "
            "clients connect to BlindPair directly.")
    return entries


class Settings(BaseSettings):
    """Defaults run on a laptop: a SQLite file, an embedded broker, a local media folder."""

    model_config = SettingsConfigDict(env_prefix="BLINDPAIR_", env_file=".env", extra="ignore")

    environment: str = "development"  # development | test | production
    data_dir: Path = Path("var")
    database_url: str = ""  # default: sqlite file in data_dir
    media_dir: Path | None = None  # default: data_dir/media
    broker_url: str = ""  # default: kombu's SQLAlchemy transport on a SQLite file in data_dir
    # Signs the login and evaluator cookies. Unset outside production: generated into data_dir/secret_key on
    # first run and kept there (never in the source, never committed: data_dir is git-ignored). Production
    # refuses to start without it, so that every web process and host signs with the same, managed key.
    secret_key: str = Field(default="", repr=False)  # never in a repr, a log line or a traceback
    # How long a researcher's login lasts, at most (the cookie and the server-side session both end then).
    login_max_age_hours: int = 14 * 24
    base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    # Where the worker finds weights: a Hugging Face cache folder; HF_HUB_OFFLINE is honoured as usual.
    model_cache_dir: Path | None = None
    # CLIP weights for the text-video relevance metric (worker/metrics.py): a hub id or a local folder; "none": off.
    clip_model: str = "openai/clip-vit-base-patch32"
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
    # Where clips are stored (app/media/storage.py, docs/storage.md): "local" (media_dir) or "s3", an
    # S3-compatible bucket (AWS S3, GCS interoperability, R2, MinIO, SeaweedFS). Credentials come from the
    # standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role), never from here.
    storage: str = "local"
    s3_endpoint_url: str = ""  # empty: AWS S3 itself
    s3_bucket: str = ""
    s3_prefix: str = ""  # e.g. "blindpair/": every key starts with it
    s3_region: str = ""  # empty: the AWS chain's region, or us-east-1
    # Stored objects no clip names (an upload whose clip was never recorded) are removed after this long.
    storage_orphan_seconds: float = 24 * 3600.0
    # How long a worker keeps retrying the upload of a finished clip (with backoff) before it gives the clip
    # back to the queue; an S3 request gives up after storage_timeout_seconds.
    storage_upload_wait_seconds: float = 120.0
    storage_timeout_seconds: float = 10.0
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
    # MP4/WebM clips: the GIF limits above apply to them too, plus a duration read from the container headers
    video_max_seconds: float = 60.0
    # SQLite: how long a write waits for the write lock before its request answers 503 with Retry-After
    # (reads and media never wait: they read a WAL snapshot). Also the busy timeout of every connection.
    db_lock_timeout_seconds: float = 10.0
    # blindpair serve / demo: after SIGTERM or SIGINT, requests in flight get this long before connections are
    # closed, and the demo's worker this long to finish its clip before it is killed.
    shutdown_grace_seconds: float = 10.0
    join_rate_limit_per_minute: int = 30
    secure_cookies: bool = False
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto headers are believed: their addresses or
    # networks, comma-separated ("*" = any peer, only when nothing but the proxy can reach the server).
    # Empty (the default): the headers are ignored and the client is the connection's peer, so nobody can
    # pick their own address for the login throttle, the join limit or the evaluator's address hash.
    forwarded_allow_ips: str = ""

    @field_validator("environment")
    @classmethod
    def _known_environment(cls, value: str) -> str:
        if value not in {"development", "test", "production"}:
            raise ValueError("BLINDPAIR_ENVIRONMENT must be development, test or production")
        return value

    @field_validator("storage")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if value not in {"local", "s3"}:
            raise ValueError("BLINDPAIR_STORAGE must be local or s3")
        return value

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("BLINDPAIR_STORAGE is s3 but BLINDPAIR_S3_BUCKET is empty: name the bucket (and "
                             "BLINDPAIR_S3_ENDPOINT_URL unless it is AWS S3), or set BLINDPAIR_STORAGE=local")
        return self

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _known_proxies(cls, value: str) -> str:
        parse_forwarded_allow_ips(value)
        return value

    @field_validator("login_max_age_hours")
    @classmethod
    def _positive_login_age(cls, value: int) -> int:
        if value < 1:
            raise ValueError("BLINDPAIR_LOGIN_MAX_AGE_HOURS must be at least 1")
        return value

    @model_validator(mode="after")
    def _secret(self) -> Settings:
        """A configured secret must be real; none at all is generated into data_dir, except in production."""
        if not self.secret_key:
            if self.environment == "production":
                raise ValueError(
                    "BLINDPAIR_SECRET_KEY is not set. In production set it to a random string of 32+ characters "
                    f"(the same on every web process), e.g. from: {GENERATE_SECRET_HINT}")
            self.secret_key = load_or_create_secret(self.data_dir)
        elif self.secret_key.lower() in PLACEHOLDER_SECRETS or len(self.secret_key) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"BLINDPAIR_SECRET_KEY is a placeholder or shorter than {MIN_SECRET_LENGTH} characters. Set it to a "
                f"random string of 32+ characters, e.g. from: {GENERATE_SECRET_HINT}, or leave it unset outside "
                "production to use a secret generated into the data folder.")
        return self

    @property
    def forwarded_allow_list(self) -> list[str]:
        return parse_forwarded_allow_ips(self.forwarded_allow_ips)

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
