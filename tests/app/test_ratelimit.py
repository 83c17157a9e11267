"""Rate limits: a sliding window per (bucket, client), a clear 429, Redis shared between processes."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from app import config
from app.ratelimit import MemoryLimiter, RedisLimiter, check_rate, reset_limits
from tests.support.servers import redis_server, redis_unavailable_reason


@pytest.fixture(autouse=True)
def _clean():
    reset_limits()
    yield
    reset_limits()


def test_sliding_window():
    lim = MemoryLimiter()
    assert [lim.hit("join", "1.2.3.4", 3, now=t) for t in (0, 10, 20)] == [0, 0, 0]
    assert lim.hit("join", "1.2.3.4", 3, now=30) == pytest.approx(30)  # the hit at t=0 expires at 60
    assert lim.hit("join", "5.6.7.8", 3, now=30) == 0  # other clients are unaffected
    assert lim.hit("login", "1.2.3.4", 3, now=30) == 0  # and so are other buckets
    assert lim.hit("join", "1.2.3.4", 3, now=60.5) == 0  # a window, not a fixed minute
    assert lim.hit("join", "1.2.3.4", 3, now=61) > 0


def test_memory_stays_bounded():
    lim = MemoryLimiter(max_keys=10)
    for i in range(100):
        lim.hit("join", f"10.0.0.{i}", 5, now=i * 61.0)
    assert len(lim._hits) <= 11


def test_check_rate_answers_429_with_retry_after():
    for _ in range(2):
        check_rate("login", "9.9.9.9", 2)
    with pytest.raises(HTTPException) as err:
        check_rate("login", "9.9.9.9", 2)
    assert err.value.status_code == 429
    assert "Too many login attempts" in err.value.detail and "at most 2 per minute" in err.value.detail
    assert 1 <= int(err.value.headers["Retry-After"]) <= 60
    check_rate("login", "9.9.9.9", 0)  # 0 = unlimited


@pytest.mark.redis
def test_redis_store_is_shared_and_used_from_settings(monkeypatch):
    reason = redis_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with redis_server() as url:
        a, b = RedisLimiter(url), RedisLimiter(url)  # two "processes"
        assert [a.hit("join", "k", 3, now=100), b.hit("join", "k", 3, now=101), a.hit("join", "k", 3, now=102)] \
            == [0, 0, 0]
        assert b.hit("join", "k", 3, now=103) == pytest.approx(57)
        assert a.hit("join", "k", 3, now=160.5) == 0  # refused attempts did not count
        monkeypatch.setenv("BLINDPAIR_BROKER_URL", url)
        config.get_settings.cache_clear()
        check_rate("join", "1.1.1.1", 1)
        with pytest.raises(HTTPException):
            check_rate("join", "1.1.1.1", 1)
        assert a._redis.keys("blindpair:rate:join:1.1.1.1")


def test_unreachable_redis_falls_back_to_counting_here(monkeypatch, caplog):
    from tests.support.servers import free_port

    monkeypatch.setenv("BLINDPAIR_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    config.get_settings.cache_clear()
    check_rate("join", "2.2.2.2", 1)
    assert "Redis unreachable" in caplog.text
    with pytest.raises(HTTPException):
        check_rate("join", "2.2.2.2", 1)
