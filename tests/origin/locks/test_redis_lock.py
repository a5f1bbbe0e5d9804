"""RedisLock against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from edge_kv.origin.locks import LockAcquireTimeout, LockError, LockNotOwned, LockUnavailable
from edge_kv.origin.locks.redis_lock import RedisLock
from edge_kv.origin.testing import RedisServer


async def test_acquire_release_and_strictly_increasing_tokens(redis: aioredis.Redis) -> None:
    lock = RedisLock(redis, "res", ttl_ms=5000)
    tokens = []
    for _ in range(5):
        tokens.append(await lock.acquire())
        assert lock.held and await lock.locked() and await lock.owned()
        assert 0 < await redis.pttl(lock.key) <= 5000
        await lock.release()
        assert not await lock.locked()
    assert tokens == sorted(set(tokens)) and tokens[0] >= 1
    # A different lock object on the same resource continues the sequence.
    other = RedisLock(redis, "res")
    assert await other.acquire() == tokens[-1] + 1
    await other.release()


async def test_mutual_exclusion_try_acquire(redis: aioredis.Redis) -> None:
    a, b = RedisLock(redis, "res"), RedisLock(redis, "res")
    assert await a.try_acquire() is not None
    assert await b.try_acquire() is None
    with pytest.raises(LockError):  # not re-entrant
        await a.try_acquire()
    await a.release()
    assert await b.try_acquire() is not None
    await b.release()


async def test_stranger_cannot_release_or_extend(redis: aioredis.Redis) -> None:
    holder = RedisLock(redis, "res", ttl_ms=5000)
    await holder.acquire()
    stranger = RedisLock(redis, "res", ttl_ms=5000)
    with pytest.raises(LockNotOwned):
        await stranger.release()
    with pytest.raises(LockNotOwned):
        await stranger.extend()
    # Forge a stranger that believes it holds the lock under another owner value.
    stranger._owner, stranger._token, stranger._deadline = "not-the-owner", 1, time.monotonic() + 5
    with pytest.raises(LockNotOwned):
        await stranger.extend(60_000)
    with pytest.raises(LockNotOwned):
        await stranger.release()
    assert (await redis.get(holder.key)).decode() == holder.owner
    assert await redis.pttl(holder.key) <= 5000
    await holder.release()


async def test_expired_holder_cannot_release_successor(redis: aioredis.Redis) -> None:
    old = RedisLock(redis, "res", ttl_ms=100)
    t_old = await old.acquire()
    await asyncio.sleep(0.15)
    new = RedisLock(redis, "res", ttl_ms=5000)
    t_new = await new.acquire(blocking_timeout=0)
    assert t_new > t_old
    with pytest.raises(LockNotOwned):
        await old.release()
    with pytest.raises(LockNotOwned):
        await old.extend()
    assert await new.owned()
    await new.release()


async def test_extend_pushes_expiry(redis: aioredis.Redis) -> None:
    lock = RedisLock(redis, "res", ttl_ms=300)
    await lock.acquire()
    validity = await lock.extend(10_000)
    assert 9000 < validity <= 10_000
    assert await redis.pttl(lock.key) > 9000
    await lock.release()


async def test_blocking_acquire_times_out_then_succeeds_when_freed(redis: aioredis.Redis) -> None:
    holder = RedisLock(redis, "res", ttl_ms=10_000)
    await holder.acquire()
    waiter = RedisLock(redis, "res", retry_delay_ms=(5, 20))
    t0 = time.monotonic()
    with pytest.raises(LockAcquireTimeout):
        await waiter.acquire(blocking_timeout=0.3)
    assert 0.3 <= time.monotonic() - t0 < 1.0
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, lambda: asyncio.ensure_future(holder.release()))
    assert await waiter.acquire(blocking_timeout=2) > 0
    await waiter.release()


async def test_waiter_wakes_when_lease_expires(redis: aioredis.Redis) -> None:
    holder = RedisLock(redis, "res", ttl_ms=200)
    await holder.acquire()
    waiter = RedisLock(redis, "res", retry_delay_ms=(500, 1000))
    t0 = time.monotonic()
    await waiter.acquire(blocking_timeout=2)  # sleeps only the holder's remaining TTL
    assert time.monotonic() - t0 < 0.45
    await waiter.release()


async def test_auto_renew_keeps_lock_past_ttl_and_stops_on_exit(redis: aioredis.Redis) -> None:
    lock = RedisLock(redis, "res", ttl_ms=200, auto_renew=True)
    async with lock:
        await asyncio.sleep(0.7)  # 3.5 TTLs
        assert await lock.owned() and not lock.lost
        assert await RedisLock(redis, "res").try_acquire() is None
        task = lock._renew_task
        assert task is not None and not task.done()
    assert task.done()
    assert not await lock.locked()
    assert lock.token is None


async def test_auto_renew_reports_lost_lease(redis: aioredis.Redis) -> None:
    lock = RedisLock(redis, "res", ttl_ms=200, auto_renew=True)
    await lock.acquire()
    await redis.set(lock.key, "someone-else")  # the lease is taken away
    await asyncio.sleep(0.3)
    assert lock.lost
    with pytest.raises(LockNotOwned):
        await lock.release()
    assert await redis.get(lock.key) == b"someone-else"


async def test_context_manager_raises_when_lease_lost_in_body(redis: aioredis.Redis) -> None:
    with pytest.raises(LockNotOwned):
        async with RedisLock(redis, "res", ttl_ms=50):
            await asyncio.sleep(0.1)
    # ...but the body's own exception wins.
    with pytest.raises(KeyError):
        async with RedisLock(redis, "res2", ttl_ms=50):
            await asyncio.sleep(0.1)
            raise KeyError("body")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl_ms": 0},
        {"ttl_ms": -5},
        {"ttl_ms": 1.5},
        {"blocking_timeout": -1},
        {"retry_delay_ms": (50, 10)},
        {"retry_delay_ms": (0, 10)},
        {"renew_fraction": 1.0},
        {"op_timeout": 0},
        {"drift_factor": 0.9},
    ],
)
async def test_bad_options_fail_at_construction(redis: aioredis.Redis, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RedisLock(redis, "res", **kwargs)  # type: ignore[arg-type]
    assert await redis.dbsize() == 0


@pytest.mark.parametrize("name", ["", "x" * 513, 42])
async def test_bad_names_write_nothing(redis: aioredis.Redis, name: object) -> None:
    with pytest.raises(ValueError):
        RedisLock(redis, name)  # type: ignore[arg-type]
    lock = RedisLock(redis, "ok")
    with pytest.raises(ValueError):
        await lock.extend(0)
    with pytest.raises(ValueError):
        await lock.acquire(blocking_timeout=-1)
    assert await redis.dbsize() == 0


async def test_killed_or_paused_redis_gives_typed_error_within_timeout(
    redis_servers: Callable[[int], list[RedisServer]],
) -> None:
    [server] = redis_servers(1)
    client = aioredis.Redis.from_url(server.url)
    try:
        lock = RedisLock(client, "res", ttl_ms=5000, op_timeout=0.3)
        await lock.acquire()
        server.pause()  # sockets stay open, nothing answers
        t0 = time.monotonic()
        with pytest.raises(LockUnavailable):
            await lock.extend()
        with pytest.raises(LockUnavailable):
            await RedisLock(client, "other", op_timeout=0.3).acquire(blocking_timeout=5)
        assert time.monotonic() - t0 < 1.5
        server.resume()
        server.kill()
        t0 = time.monotonic()
        with pytest.raises(LockUnavailable):
            await RedisLock(client, "res2", op_timeout=0.3).acquire(blocking_timeout=5)
        with pytest.raises(LockUnavailable):
            await lock.release()
        assert time.monotonic() - t0 < 1.5
        server.start()
        assert await RedisLock(client, "res3").acquire() >= 1  # recovers after restart
    finally:
        await client.aclose()
