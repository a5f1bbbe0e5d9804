#!/usr/bin/env python3
"""Benchmark: edge_kv's Redis rate limiter against the one-round-trip floor and competitors.

Starts its own redis-server, then for each contender runs ``--concurrency`` asyncio
tasks for ``--seconds``, each deciding for a random key out of ``--keys`` under the
same limit (10 per second per key). Every contender uses the same server and the
same concurrency in the same run; the server is flushed between contenders and the
whole set is repeated ``--rounds`` times in alternating order (mean reported).

* ``floor``: ``EVALSHA`` of a trivial script (``return 1``) through redis-py asyncio,
  the best a one-round-trip limiter can do from this client.
* ``edge_kv``: :class:`edge_kv.origin.ratelimit.RateLimiter` (each policy, and two tiers).
* ``limits``: ``limits.aio`` moving window and sliding-window counter on its async
  Redis storage (redis-py implementation).
* ``pyrate-limiter``: ``Limiter`` with a per-key ``StateBucket`` (GCRA, ``RedisStateStore``)
  on a redis-py asyncio client, non-blocking ``try_acquire_async``.

Needs the ``bench`` extra: ``.venv/bin/pip install -e '.[dev,bench]'``. Usage::

    .venv/bin/python scripts/bench_ratelimit.py [--seconds 3] [--concurrency 32] [--keys 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis  # noqa: E402

from edge_kv.core.ratelimit import FixedWindow, SlidingLog, SlidingWindowCounter, TokenBucket  # noqa: E402
from edge_kv.origin._scripts import LuaScript  # noqa: E402
from edge_kv.origin.ratelimit import RateLimiter  # noqa: E402
from edge_kv.origin.testing import RedisServer  # noqa: E402

Decide = Callable[[str], Awaitable[bool]]
LIMIT, PERIOD_S = 10, 1


async def make_floor(url: str, concurrency: int) -> tuple[Decide, Callable[[], Awaitable[None]]]:
    client = aioredis.Redis.from_url(url, max_connections=concurrency)
    trivial = LuaScript("return 1", name="trivial")

    async def decide(key: str) -> bool:
        return bool(await trivial.run(client, [key], [1]))

    return decide, client.aclose


def make_edge_kv(policies: Any) -> Callable[[str, int], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]:
    async def factory(url: str, concurrency: int) -> tuple[Decide, Callable[[], Awaitable[None]]]:
        client = aioredis.Redis.from_url(url, max_connections=concurrency)
        limiter = RateLimiter(client, policies, timeout=5.0)

        async def decide(key: str) -> bool:
            return (await limiter.hit(key)).allowed

        return decide, client.aclose

    return factory


def make_limits(kind: str) -> Callable[[str, int], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]:
    async def factory(url: str, concurrency: int) -> tuple[Decide, Callable[[], Awaitable[None]]]:
        from limits import RateLimitItemPerSecond
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

        storage = RedisStorage(url.replace("redis://", "async+redis://"), implementation="redispy",
                               max_connections=concurrency)
        strategy = (MovingWindowRateLimiter if kind == "moving" else SlidingWindowCounterRateLimiter)(storage)
        item = RateLimitItemPerSecond(LIMIT, PERIOD_S)

        async def decide(key: str) -> bool:
            return bool(await strategy.hit(item, key))

        async def close() -> None:
            return None

        return decide, close

    return factory


async def make_pyrate(url: str, concurrency: int) -> tuple[Decide, Callable[[], Awaitable[None]]]:
    from pyrate_limiter import GCRA, BucketFactory, Duration, Limiter, Rate, RateItem, RedisStateStore, StateBucket

    client = aioredis.Redis.from_url(url, max_connections=concurrency)
    rates = [Rate(LIMIT, Duration.SECOND * PERIOD_S)]

    class PerKey(BucketFactory):  # type: ignore[misc]
        """One Redis-backed GCRA bucket per key (pyrate routes items to buckets by name)."""

        def __init__(self) -> None:
            self.buckets: dict[str, Any] = {}

        def wrap_item(self, name: str, weight: int = 1) -> RateItem:
            return RateItem(name, time.time_ns() // 1_000_000, weight=weight)

        def get(self, item: RateItem) -> Any:
            bucket = self.buckets.get(item.name)
            if bucket is None:
                store = RedisStateStore(client, f"pyrate:{item.name}")
                bucket = self.buckets[item.name] = StateBucket(rates, algorithm=GCRA(), store=store)
            return bucket

    limiter = Limiter(PerKey())

    async def decide(key: str) -> bool:
        return bool(await limiter.try_acquire_async(key, blocking=False))

    async def close() -> None:
        limiter.close() if hasattr(limiter, "close") else None
        await client.aclose()

    return decide, close


async def run_one(url: str, factory: Any, concurrency: int, seconds: float, keys: int) -> tuple[float, float]:
    decide, close = await factory(url, concurrency)
    names = [f"user:{i}" for i in range(keys)]
    done = allowed = 0
    loop = asyncio.get_running_loop()
    for name in names[:concurrency]:  # warm connections and scripts outside the timing
        await decide(name)
    start = loop.time()
    deadline = start + seconds

    async def worker(seed: int) -> None:
        nonlocal done, allowed
        rng = random.Random(seed)
        while loop.time() < deadline:
            ok = await decide(rng.choice(names))
            done += 1
            allowed += ok

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        await close()
    elapsed = loop.time() - start
    return done / elapsed, allowed / max(done, 1)


CONTENDERS: list[tuple[str, Any]] = [
    ("floor: EVALSHA trivial script", make_floor),
    ("edge_kv token bucket (GCRA)", make_edge_kv(TokenBucket(LIMIT, LIMIT / PERIOD_S))),
    ("edge_kv sliding log", make_edge_kv(SlidingLog(LIMIT, PERIOD_S))),
    ("edge_kv sliding window counter", make_edge_kv(SlidingWindowCounter(LIMIT, PERIOD_S))),
    ("edge_kv fixed window", make_edge_kv(FixedWindow(LIMIT, PERIOD_S))),
    ("edge_kv tiers: bucket + log 600/min", make_edge_kv(
        [TokenBucket(LIMIT, LIMIT / PERIOD_S, name="s"), SlidingLog(600, 60, name="m")])),
    ("limits moving window (async redis)", make_limits("moving")),
    ("limits sliding window counter (async redis)", make_limits("sliding")),
    ("pyrate-limiter GCRA StateBucket (redis)", make_pyrate),
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="", help="substring filter on contender names")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in CONTENDERS}
    chosen = [(n, f) for n, f in CONTENDERS if args.only in n or n.startswith("floor")]
    with RedisServer() as server:
        admin = aioredis.Redis.from_url(server.url)
        version = (await admin.info("server"))["redis_version"]
        for r in range(args.rounds):
            order = chosen if r % 2 == 0 else chosen[::-1]
            for name, factory in order:
                await admin.flushall()
                rate, ok = await run_one(server.url, factory, args.concurrency, args.seconds, args.keys)
                results[name].append((rate, ok))
                print(f"  round {r + 1}: {name}: {rate:,.0f}/s", file=sys.stderr)
        await admin.aclose()
    floor = statistics.mean(x for x, _ in results[chosen[0][0]])
    ours = statistics.mean(x for x, _ in results["edge_kv token bucket (GCRA)"]) \
        if results["edge_kv token bucket (GCRA)"] else None
    print(f"\nredis-server {version}, Python {sys.version.split()[0]}, concurrency {args.concurrency}, "
          f"{args.keys} keys, limit {LIMIT}/{PERIOD_S}s per key, {args.seconds:g} s x {args.rounds} rounds\n")
    print("| contender | decisions/s | vs floor | edge_kv token bucket vs it | admitted |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, _ in chosen:
        rate = statistics.mean(x for x, _ in results[name])
        admitted = statistics.mean(a for _, a in results[name])
        vs_it = f"{ours / rate:.2f}x" if ours else "-"
        print(f"| {name} | {rate:,.0f} | {rate / floor:.2f}x | {vs_it} | {admitted:.0%} |")


if __name__ == "__main__":
    asyncio.run(main())
