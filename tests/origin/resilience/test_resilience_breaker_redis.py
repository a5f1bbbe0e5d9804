"""Redis-shared breaker: two "replicas" (two breakers, two clients) on one real
redis-server see one state; a killed or frozen Redis degrades to the documented mode
within the configured timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
import redis.asyncio as aioredis

from edge_kv.origin.resilience import BreakerConfig, CircuitBreaker, CircuitOpenError, FakeClock
from edge_kv.origin.resilience.breaker_redis import RedisBreakerStore
from edge_kv.origin.testing import RedisServer

CFG = BreakerConfig(
    window_size=4, minimum_calls=4, failure_rate_threshold=50, wait_in_open=5, half_open_probes=3
)


async def ok() -> str:
    return "ok"


async def fail() -> str:
    raise ConnectionError("down")


def replica(
    url: str, clock: FakeClock, changes: list[tuple[str, str]], **kw: object
) -> tuple[CircuitBreaker, RedisBreakerStore, aioredis.Redis]:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
    store = RedisBreakerStore(client, use_server_time=False, clock=clock, **kw)  # type: ignore[arg-type]
    b = CircuitBreaker(
        "payments", CFG, store=store, clock=clock, on_state_change=lambda _n, o, n: changes.append((o, n))
    )
    return b, store, client


async def test_two_replicas_share_one_state(redis: aioredis.Redis, redis_server: RedisServer) -> None:
    clock = FakeClock()
    seen_a: list[tuple[str, str]] = []
    seen_b: list[tuple[str, str]] = []
    a, _, ca = replica(redis_server.url, clock, seen_a)
    b, _, cb = replica(redis_server.url, clock, seen_b)
    try:
        await a.call(ok)
        with pytest.raises(ConnectionError):
            await b.call(fail)
        await b.call(ok)
        with pytest.raises(ConnectionError):
            await a.call(fail)  # 4th call of the shared window, 2 failures -> open
        assert a.state == "open"
        with pytest.raises(CircuitOpenError) as info:
            await b.call(ok)  # B never saw a failure threshold itself
        assert info.value.retry_after == pytest.approx(5.0)
        assert seen_b == [("closed", "open")]  # observed, not made, by B
        clock.advance(5)
        # Probe budget (3) is global: replicas together get exactly 3 probes.
        gate = asyncio.Event()
        running = 0

        async def probe() -> str:
            nonlocal running
            running += 1
            await gate.wait()
            return "ok"

        async def attempt(br: CircuitBreaker) -> str:
            try:
                return await br.call(probe)
            except CircuitOpenError:
                return "rejected"

        tasks = [asyncio.create_task(attempt(a if i % 2 else b)) for i in range(20)]
        while sum(t.done() for t in tasks) < 17:  # noqa: ASYNC110 - polling task states
            await asyncio.sleep(0.001)
        assert running == 3
        gate.set()
        results = await asyncio.gather(*tasks)
        assert results.count("ok") == 3
        await a.call(ok)
        await b.call(ok)
        assert a.state == b.state == "closed"
        # redis-py's asyncio client shares the sync client's signatures (`Awaitable[str | None] | ...`).
        assert await cast(Awaitable[bytes | None], redis.hget("edge_kv:breaker:payments", "st")) == b"0"
    finally:
        await ca.aclose()
        await cb.aclose()


async def test_server_time_mode_opens_and_half_opens_for_everyone(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    cfg = BreakerConfig(window_size=2, minimum_calls=2, wait_in_open=0.3, half_open_probes=1)
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(2)]
    a, b = (CircuitBreaker("srv", cfg, store=RedisBreakerStore(c)) for c in clients)
    try:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await a.call(fail)
        with pytest.raises(CircuitOpenError):
            await b.call(ok)
        await asyncio.sleep(0.35)
        assert await b.call(ok) == "ok"
        assert b.state == "closed"
        assert await a.call(ok) == "ok"
    finally:
        for c in clients:
            await c.aclose()


async def test_killed_redis_falls_back_to_local_in_bounded_time(
    redis_servers: Callable[[int], list[RedisServer]],
) -> None:
    (server,) = redis_servers(1)
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    br, store, client = replica(server.url, clock, changes, timeout=0.3, redis_retry_after=2.0)
    try:
        await br.call(ok)  # shared
        server.kill()
        t0 = time.monotonic()
        assert await br.call(ok) == "ok"  # Redis gone: the local breaker answers
        assert time.monotonic() - t0 < 1.0
        assert store.degraded and store.redis_errors == 1
        t0 = time.monotonic()
        for _ in range(3):  # no further Redis attempts while degraded: fast, and the local breaker works
            with pytest.raises(ConnectionError):
                await br.call(fail)
        assert time.monotonic() - t0 < 0.1
        assert store.redis_errors == 1
        with pytest.raises(CircuitOpenError):
            await br.call(ok)
        # Redis comes back (empty); after redis_retry_after the shared state is used again.
        server.start()
        clock.advance(2.0)
        assert await br.call(ok) == "ok"
        assert not store.degraded
        assert await client.hget("edge_kv:breaker:payments", "n") == b"1"  # recorded in Redis again
    finally:
        await client.aclose()


@pytest.mark.parametrize(("mode", "outcome"), [("open", "ok"), ("closed", "rejected")])
async def test_frozen_redis_fail_open_or_closed(
    redis_servers: Callable[[int], list[RedisServer]], mode: str, outcome: str
) -> None:
    (server,) = redis_servers(1)
    clock = FakeClock()
    br, store, client = replica(server.url, clock, [], timeout=0.2, on_redis_error=mode)
    try:
        await br.call(ok)
        server.pause()  # SIGSTOP: the socket stays open, nothing answers
        t0 = time.monotonic()
        try:
            result = await br.call(ok)
        except CircuitOpenError:
            result = "rejected"
        elapsed = time.monotonic() - t0
        assert result == outcome
        assert 0.15 < elapsed < 0.8
        assert store.redis_errors == 1
    finally:
        server.resume()
        await client.aclose()


def test_store_validation() -> None:
    client = aioredis.Redis()
    with pytest.raises(ValueError):
        RedisBreakerStore(client, on_redis_error="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RedisBreakerStore(client, timeout=0)
