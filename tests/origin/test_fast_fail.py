"""A refused connection fails at once, with the part's typed ``Unavailable`` error.

Clients are built the way users build them: ``redis.asyncio.Redis(host=..., port=...)``,
whose default ``Retry`` retries a failed connection 3 times with 1-10 s exponential
backoff, and ``RedisCluster(host=..., port=...)``. Nothing listens on the port. Every
Redis-backed part of edge_kv.origin must answer in well under 100 ms although its
timeout is 2 s, and the client must keep its own retry policy for its other users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from edge_kv.core import TokenBucket
from edge_kv.core.errors import Unavailable
from edge_kv.origin import _redis
from edge_kv.origin.idempotency import RedisDeduplicator, RedisStore, StoredResponse
from edge_kv.origin.locks import FencedStore, LockUnavailable, RedisLock
from edge_kv.origin.locks.redlock import Redlock
from edge_kv.origin.ratelimit import RateLimiter, RateLimiterUnavailable
from edge_kv.origin.resilience import BreakerConfig, CircuitBreaker
from edge_kv.origin.resilience.breaker_redis import RedisBreakerStore
from edge_kv.origin.testing import free_port

FAST_S = 0.1  # "at once" on loopback; the parts' timeouts below are 2 s
TIMEOUT_S = 2.0

Op = Callable[[Any], Awaitable[object]]


async def _limiter_hit(c: Any) -> object:
    return await RateLimiter(c, TokenBucket(10, 10), timeout=TIMEOUT_S).hit("k")


async def _limiter_reset(c: Any) -> object:
    await RateLimiter(c, TokenBucket(10, 10), timeout=TIMEOUT_S).reset("k")
    return None


async def _lock_try(c: Any) -> object:
    return await RedisLock(c, "r", op_timeout=TIMEOUT_S).try_acquire()


async def _lock_acquire(c: Any) -> object:
    return await RedisLock(c, "r", op_timeout=TIMEOUT_S).acquire(blocking_timeout=TIMEOUT_S)


async def _fenced_set(c: Any) -> object:
    return await FencedStore(c, op_timeout=TIMEOUT_S).set("r", 1, "{r}:data", "v")


async def _fence_read(c: Any) -> object:
    return await FencedStore(c, op_timeout=TIMEOUT_S).highest("r")


async def _idem_begin(c: Any) -> object:
    return await RedisStore(c, timeout=TIMEOUT_S).begin("k", "fp", "tok", 1000)


async def _idem_complete(c: Any) -> object:
    return await RedisStore(c, timeout=TIMEOUT_S).complete("k", "tok", StoredResponse(200), 1000)


async def _dedup_seen(c: Any) -> object:
    return await RedisDeduplicator(c, timeout=TIMEOUT_S).seen("m")


OPS: dict[str, tuple[Op, type[Unavailable]]] = {
    "limiter.hit": (_limiter_hit, RateLimiterUnavailable),
    "limiter.reset": (_limiter_reset, RateLimiterUnavailable),
    "RedisLock.try_acquire": (_lock_try, LockUnavailable),
    "RedisLock.acquire": (_lock_acquire, LockUnavailable),
    "FencedStore.set": (_fenced_set, LockUnavailable),
    "FencedStore.highest": (_fence_read, LockUnavailable),
    "RedisStore.begin": (_idem_begin, Unavailable),
    "RedisStore.complete": (_idem_complete, Unavailable),
    "RedisDeduplicator.seen": (_dedup_seen, Unavailable),
}


@pytest_asyncio.fixture(params=["Redis", "RedisCluster"])
async def refused(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A client, with its library-default options, of a port nothing listens on."""
    port = free_port()
    client: Any
    if request.param == "Redis":
        client = aioredis.Redis(host="127.0.0.1", port=port)
        assert client.get_retry().get_retries() == 3  # redis-py's default: 3 retries with backoff
    else:
        client = RedisCluster(host="127.0.0.1", port=port)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize("name", list(OPS))
async def test_refused_connection_fails_at_once_with_typed_error(refused: Any, name: str) -> None:
    op, error = OPS[name]
    started = time.monotonic()
    with pytest.raises(error) as info:
        await asyncio.wait_for(op(refused), 10)  # the guard only matters before the fix
    elapsed = time.monotonic() - started
    assert isinstance(info.value, Unavailable)
    assert elapsed < FAST_S, f"{name}: {elapsed:.3f} s"


async def test_redlock_all_nodes_refused_fails_at_once() -> None:
    clients = [aioredis.Redis(host="127.0.0.1", port=free_port()) for _ in range(3)]
    try:
        lock = Redlock(clients, "r", op_timeout=TIMEOUT_S)
        started = time.monotonic()
        with pytest.raises(LockUnavailable):
            await asyncio.wait_for(lock.try_acquire(), 10)
        assert time.monotonic() - started < FAST_S
    finally:
        for c in clients:
            await c.aclose()


async def test_shared_breaker_falls_back_at_once(refused: Any) -> None:
    store = RedisBreakerStore(refused, timeout=TIMEOUT_S)
    breaker = CircuitBreaker("payments", BreakerConfig(), store=store)

    async def ok() -> str:
        return "ok"

    started = time.monotonic()
    assert await asyncio.wait_for(breaker.call(ok), 10) == "ok"  # the local breaker took over
    assert time.monotonic() - started < FAST_S
    assert store.redis_errors == 1 and store.degraded


async def test_client_keeps_its_own_retries_outside_edge_kv() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port())
    try:
        RateLimiter(client, TokenBucket(1, 1))
        RedisLock(client, "r")  # preparing twice is harmless
        retry = client.get_retry()
        assert retry is not None
        assert retry.get_retries() == 3  # the application's own calls still retry
        with _redis.fast_fail():
            assert retry.get_retries() == 0  # edge_kv's calls make one attempt
    finally:
        await client.aclose()
