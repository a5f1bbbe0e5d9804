"""No over-admission under concurrency: 64 clients hammer 10 keys on a real redis-server.

Duration: ``EDGE_KV_STRESS_SECONDS`` (default 4 s for the token bucket, half of it for
the sliding log). Every decision carries the Redis ``TIME`` it was taken at, and Redis
runs scripts one at a time, so the recorded admissions are the true history.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import defaultdict

import pytest
import redis.asyncio as aioredis

from edge_kv.core.ratelimit import Policy, SlidingLog, TokenBucket
from edge_kv.origin.ratelimit import RateLimiter
from edge_kv.origin.testing import RedisServer

pytestmark = pytest.mark.slow  # runs for EDGE_KV_STRESS_SECONDS
SECONDS = float(os.environ.get("EDGE_KV_STRESS_SECONDS", "4"))
CLIENTS = 64
KEYS = [f"stress:{i}" for i in range(10)]


async def hammer(server: RedisServer, policy: Policy, seconds: float) -> dict[str, list[tuple[int, bool]]]:
    client = aioredis.Redis.from_url(server.url, max_connections=CLIENTS)
    limiter = RateLimiter(client, policy, timeout=5.0)
    history: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while loop.time() < deadline:
            key = rng.choice(KEYS)
            result = await limiter.hit(key)
            history[key].append((result.now_us, result.allowed))

    try:
        await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
    finally:
        await client.aclose()
    return history


async def test_token_bucket_never_over_admits(redis_server: RedisServer) -> None:
    capacity, rate = 20, 50
    bucket = TokenBucket(capacity, rate, name="stress-tb")
    interval = bucket.interval_us
    history = await hammer(redis_server, bucket, SECONDS)
    total_admitted = 0
    for key in KEYS:
        events = sorted(history[key])
        admitted = [t for t, ok in events if ok]
        assert admitted, key
        total_admitted += len(admitted)
        # Any stretch [a_i, a_j] of admissions holds at most capacity + tokens earned in it.
        for i in range(len(admitted)):
            for j in range(i, len(admitted)):
                assert j - i + 1 <= capacity + (admitted[j] - admitted[i]) // interval, (key, i, j)
        elapsed = events[-1][0] - events[0][0]
        allowance = capacity + elapsed // interval
        demand = len(events) / max(elapsed / 1e6, 1e-6)
        assert demand > rate, f"demand {demand:.0f}/s did not exceed the rate; the test proves nothing"
        assert len(admitted) <= allowance
        assert len(admitted) >= 0.99 * allowance, (key, len(admitted), allowance)
    print(f"token bucket: {sum(len(v) for v in history.values())} decisions, {total_admitted} admitted")


async def test_sliding_log_never_over_admits(redis_server: RedisServer) -> None:
    limit, window_s = 25, 0.5
    log = SlidingLog(limit, window_s, name="stress-log")
    history = await hammer(redis_server, log, max(1.0, SECONDS / 2))
    w = log.window_us
    for key in KEYS:
        events = sorted(history[key])
        admitted = [t for t, ok in events if ok]
        lo = 0
        for hi, t in enumerate(admitted):  # every window (t - w, t] holds at most `limit`
            while admitted[lo] <= t - w:
                lo += 1
            assert hi - lo + 1 <= limit, (key, t)
        elapsed = events[-1][0] - events[0][0]
        # Saturated demand fills every window: at least `limit` per full window elapsed.
        assert len(admitted) >= 0.99 * limit * (elapsed // w), (key, len(admitted), elapsed)
