"""RateLimiter against a real redis-server: bad input, server time, expiry, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from edge_kv.core.ratelimit import FixedWindow, Policy, SlidingLog, SlidingWindowCounter, TokenBucket
from edge_kv.origin.ratelimit import LIMIT_SCRIPT, RateLimiter, RateLimiterUnavailable
from edge_kv.origin.testing import RedisServer

ALL: list[Policy] = [
    TokenBucket(5, 10, name="tb"),
    SlidingLog(5, 0.5, name="log"),
    SlidingWindowCounter(5, 0.5, name="swc"),
    FixedWindow(5, 0.5, name="fw"),
]


@pytest.mark.parametrize(
    "make",
    [
        lambda: TokenBucket(0, 1),
        lambda: TokenBucket(-1, 1),
        lambda: TokenBucket(1, 0),
        lambda: TokenBucket(1, -2.5),
        lambda: TokenBucket(1.5, 1),  # type: ignore[arg-type]
        lambda: TokenBucket(1, float("nan")),
        lambda: SlidingLog(0, 1),
        lambda: SlidingLog(1, 0),
        lambda: SlidingWindowCounter(5, -1),
        lambda: FixedWindow(5, 0),
        lambda: FixedWindow(True, 1),  # a bool is an int to mypy, refused at run time
    ],
)
def test_bad_policy_parameters_raise(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


async def test_bad_limiter_arguments_raise(redis: aioredis.Redis) -> None:
    for bad in ([], [TokenBucket(1, 1), SlidingLog(1, 1)], ["tb"]):  # empty, duplicate names, not a policy
        with pytest.raises(ValueError):
            RateLimiter(redis, bad)  # type: ignore[arg-type]
    for timeout in (0, -1, float("inf"), "1"):
        with pytest.raises(ValueError):
            RateLimiter(redis, TokenBucket(1, 1), timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "cost", "now_us"),
    [
        ("", 1, None),
        ("k" * 513, 1, None),
        ("é" * 300, 1, None),
        (None, 1, None),
        (b"k", 1, None),
        ("k", 1.0, None),
        ("k", "1", None),
        ("k", -1, None),
        ("k", 6, None),
        ("k", True, None),
        ("k", 1, -1),
        ("k", 1, 1.5),
        ("k", 1, 2**53),
    ],
)
async def test_bad_call_arguments_write_nothing(
    redis: aioredis.Redis, key: object, cost: object, now_us: object
) -> None:
    limiter = RateLimiter(redis, ALL)
    await redis.set("unrelated", "1")
    with pytest.raises(ValueError):
        await limiter.hit(key, cost, now_us=now_us)  # type: ignore[arg-type]
    assert await redis.dbsize() == 1


async def test_uses_redis_time_and_tiers_are_all_or_nothing(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, [TokenBucket(10, 1, name="burst"), FixedWindow(3, 3600, name="hour")])
    server_s, server_us = await redis.time()
    first = await limiter.hit("user")
    assert abs(first.now_us - (server_s * 1_000_000 + server_us)) < 5_000_000
    results = [first] + [await limiter.hit("user") for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False, False]
    refused = results[-1]
    assert refused.decision.policy == "hour"
    # The bucket tier admitted but was not charged: all-or-nothing.
    assert refused.tiers[0].allowed and refused.tiers[0].remaining == 6
    peek = await limiter.peek("user")
    assert peek.tiers[0].remaining in (6, 7) and peek.tiers[1].remaining == 0


async def test_state_expires_with_reset(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, ALL)
    for _ in range(5):
        assert (await limiter.hit("k")).allowed
    assert not (await limiter.hit("k")).allowed
    keys = limiter.keys_for("k")
    ttls = [await redis.pttl(k) for k in keys]
    assert all(0 < t <= 1_000 for t in ttls), ttls  # tb: 500 ms; log: 500 ms; swc <= 1 s; fw <= 500 ms
    await asyncio.sleep(1.05)
    assert await redis.exists(*keys) == 0  # expired exactly when the state became empty
    assert (await limiter.hit("k")).decision.remaining == 4


async def test_peek_on_fresh_key_writes_nothing(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, ALL)
    result = await limiter.peek("fresh")
    assert result.allowed and result.decision.remaining == 5
    assert await redis.dbsize() == 0


async def test_reset_forgets_state(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, TokenBucket(1, 0.01))
    assert (await limiter.hit("k")).allowed
    assert not (await limiter.hit("k")).allowed
    await limiter.reset("k")
    assert (await limiter.hit("k")).allowed


async def test_script_reloaded_after_server_restart(
    redis_servers: Callable[[int], list[RedisServer]],
) -> None:
    (server,) = redis_servers(1)
    client = aioredis.Redis.from_url(server.url)
    try:
        limiter = RateLimiter(client, TokenBucket(2, 1))
        assert (await limiter.hit("k")).allowed
        server.restart()  # empty script cache: the EVALSHA gets NOSCRIPT, EVAL recovers
        await client.connection_pool.disconnect()
        assert (await limiter.hit("k")).decision.remaining == 1
        assert await client.script_exists(LIMIT_SCRIPT.sha) == [True]
    finally:
        await client.aclose()


async def test_paused_server_bounded_then_recovers(redis_servers: Callable[[int], list[RedisServer]]) -> None:
    (server,) = redis_servers(1)
    client = aioredis.Redis.from_url(server.url)
    closed = RateLimiter(client, TokenBucket(3, 1, name="k"), timeout=0.2)
    opened = RateLimiter(client, TokenBucket(3, 1, name="k"), timeout=0.2, fail_open=True)
    try:
        assert (await closed.hit("k")).allowed
        server.pause()
        start = time.monotonic()
        with pytest.raises(RateLimiterUnavailable):
            await closed.hit("k")
        result = await opened.hit("k")
        assert time.monotonic() - start < 0.4 + 0.6
        assert result.allowed and result.degraded and result.headers() == []
        server.resume()
        after = await closed.hit("k")  # the connection broken by the timeout is replaced
        assert not after.degraded and after.now_us > 0
        # A hit that timed out may still run once the server wakes up (it was already in
        # the socket): 1 to 3 units are charged here, never more than were sent.
        assert after.decision.remaining <= 1
    finally:
        server.resume()
        await client.aclose()


async def test_killed_server_fails_fast(redis_servers: Callable[[int], list[RedisServer]]) -> None:
    (server,) = redis_servers(1)
    client = aioredis.Redis.from_url(server.url)
    limiter = RateLimiter(client, TokenBucket(3, 1), timeout=2.0)
    try:
        assert (await limiter.hit("k")).allowed
        server.kill()
        start = time.monotonic()
        with pytest.raises(RateLimiterUnavailable):
            await limiter.hit("k")
        assert time.monotonic() - start < 2.0 + 0.5
        server.start()
        assert (await limiter.hit("k")).allowed  # new server, empty state
    finally:
        await client.aclose()


async def test_lua_errors_on_malformed_call(redis: aioredis.Redis) -> None:
    with pytest.raises(aioredis.ResponseError, match="unknown kind"):
        await LIMIT_SCRIPT.run(redis, ["a"], ["", 1, "bogus:1:1"])
    with pytest.raises(aioredis.ResponseError, match="expected"):
        await LIMIT_SCRIPT.run(redis, ["a"], ["", 1])
    with pytest.raises(aioredis.ResponseError, match=r"one .* tier per key"):
        await LIMIT_SCRIPT.run(redis, ["a", "b"], ["", 1, "tb:1:1"])
    with pytest.raises(aioredis.ResponseError, match=r"one .* tier per key"):
        await LIMIT_SCRIPT.run(redis, ["a"], ["", 1, "tb:x:1"])
    assert await redis.dbsize() == 0
