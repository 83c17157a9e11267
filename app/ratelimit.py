"""Sliding-window rate limits per (bucket, client), e.g. joining a study or trying to log in.

``check_rate("login", client_ip(request), 10)`` lets 10 attempts through in any 60 seconds and answers the
11th with HTTP 429, a message saying how long to wait, and a ``Retry-After`` header.

Two stores:
- In-process (the default): a dict of timestamp deques. Correct for one web process (``blindpair serve``
  runs one uvicorn process), but each process of a multi-process deployment (``--workers N``, several
  hosts) would count on its own and let N times the limit through.
- Redis, used automatically when ``BLINDPAIR_BROKER_URL`` is a ``redis://`` or ``rediss://`` URL (the
  deployment already runs Redis for Celery then): one sorted set per key, shared by every process.
  If Redis cannot be reached the limiter falls back to in-process counting and logs why, so a broker
  outage never locks people out of the site (rating must go on when the broker is down, issue 5).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from functools import lru_cache

from fastapi import HTTPException, Request

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
BUCKET_WORDS = {"join": "new sessions", "login": "login attempts"}


class MemoryLimiter:
    """Sliding window over the last ``window`` seconds, kept in this process."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()  # sync routes run in a thread pool
        self._max_keys = max_keys

    def hit(self, bucket: str, key: str, limit: int, window: float = WINDOW_SECONDS,
            now: float | None = None) -> float:
        """Record one attempt; return 0 if allowed, else the seconds until the oldest attempt expires."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault((bucket, key), deque())
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= limit:
                return max(hits[0] + window - now, 0.001)
            hits.append(now)
            if len(self._hits) > self._max_keys:
                self._sweep(now, window)
            return 0.0

    def _sweep(self, now: float, window: float) -> None:
        # Bound memory under a flood of distinct clients: drop keys whose attempts have all expired.
        for k in [k for k, v in self._hits.items() if not v or v[-1] <= now - window]:
            del self._hits[k]

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


class RedisLimiter:
    """The same sliding window in Redis sorted sets, shared by every process that uses the same Redis."""

    def __init__(self, url: str, *, prefix: str = "blindpair:rate:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._prefix = prefix

    def hit(self, bucket: str, key: str, limit: int, window: float = WINDOW_SECONDS,
            now: float | None = None) -> float:
        now = time.time() if now is None else now
        name = f"{self._prefix}{bucket}:{key}"
        member = f"{now:.6f}:{uuid.uuid4().hex}"
        # MULTI/EXEC: trim, add, count in one atomic step, so concurrent processes cannot both squeeze in.
        pipe = self._redis.pipeline(transaction=True)
        pipe.zremrangebyscore(name, 0, now - window)
        pipe.zadd(name, {member: now})
        pipe.zcard(name)
        pipe.expire(name, int(math.ceil(window)) + 1)
        _, _, count, _ = pipe.execute()
        if count <= limit:
            return 0.0
        # Over the limit: this attempt does not count, so a client that keeps hammering is not locked out
        # for longer than the window.
        self._redis.zrem(name, member)
        oldest = self._redis.zrange(name, 0, 0, withscores=True)
        # withscores: (member, score) pairs (lists under RESP3); the stubs' type also covers bare members.
        first = oldest[0] if oldest else None
        if not isinstance(first, tuple | list):
            return window
        return max(float(first[1]) + window - now, 0.001)

    def reset(self) -> None:
        for name in self._redis.scan_iter(f"{self._prefix}*"):
            self._redis.delete(name)


_memory = MemoryLimiter()


@lru_cache
def _redis_limiter(url: str) -> RedisLimiter:
    return RedisLimiter(url)


def get_limiter() -> MemoryLimiter | RedisLimiter:
    from app.config import get_settings

    url = get_settings().broker_url
    if url.startswith(("redis://", "rediss://")):
        return _redis_limiter(url)
    return _memory


def client_ip(request: Request) -> str:
    """The client's address: the connection's peer, or what a proxy named in BLINDPAIR_FORWARDED_ALLOW_IPS
    forwarded (``app.middleware.install_forwarded`` decides it, once, for every reader of the address)."""
    return request.client.host if request.client else "unknown"


def check_rate(bucket: str, key: str, limit_per_minute: int) -> None:
    """Count one attempt for (bucket, key); raise HTTP 429 with a clear message once over the limit.

    A limit of 0 or less means "no limit".
    """
    if limit_per_minute <= 0:
        return
    limiter = get_limiter()
    try:
        wait = limiter.hit(bucket, key, limit_per_minute)
    except Exception as exc:  # redis.ConnectionError, TimeoutError, ...: count here instead
        if limiter is _memory:
            raise
        log.warning("rate limiter: Redis unreachable (%s); counting in this process until it is back", exc)
        wait = _memory.hit(bucket, key, limit_per_minute)
    if wait:
        seconds = max(1, math.ceil(wait))
        what = BUCKET_WORDS.get(bucket, "requests")
        raise HTTPException(
            status_code=429,
            detail=f"Too many {what} from your network: at most {limit_per_minute} per minute. "
                   f"Wait {seconds} seconds and try again.",
            headers={"Retry-After": str(seconds)},
        )


def reset_limits() -> None:
    """Forget every count (tests, and an admin who locked themselves out on a one-process install)."""
    _memory.reset()
    from app.config import get_settings

    url = get_settings().broker_url
    if url.startswith(("redis://", "rediss://")):
        try:
            _redis_limiter(url).reset()
        except Exception as exc:
            log.warning("rate limiter: could not reset Redis counts (%s)", exc)
