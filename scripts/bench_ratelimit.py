#!/usr/bin/env python3
"""Benchmark: edge_kv's Redis rate limiter against the one-round-trip floor and competitors.

Starts its own redis-server, then for each contender runs ``--concurrency`` asyncio
tasks for ``--seconds``, each deciding for a random key out of ``--keys`` under the
same limit (10 per second per key). Every contender uses the same server and the
same concurrency in the same run, taking turns in short slices (rotating order) so that
other load on the machine hits every contender alike.

* ``floor``: ``EVALSHA`` of a trivial script (``return 1``) through redis-py asyncio,
  the best a one-round-trip limiter can do from this client.
* ``edge_kv``: :class:`edge_kv.origin.ratelimit.RateLimiter` (each policy, and two tiers),
  with production defaults (``timeout=0.25``, auto-pipelined transport); the token
  bucket also with ``autopipeline=False`` (redis-py's pool, one call at a time).
* ``limits``: ``limits.aio`` moving window and sliding-window counter on its async
  Redis storage (redis-py implementation).
* ``pyrate-limiter``: ``Limiter`` with a per-key ``StateBucket`` (GCRA, ``RedisStateStore``)
  on a redis-py asyncio client, non-blocking ``try_acquire_async``.

Needs the ``bench`` extra: ``.venv/bin/pip install -e '.[dev,bench]'``. Usage::

    .venv/bin/python scripts/bench_ratelimit.py [--seconds 6] [--slice 0.5] [--concurrency 32 256] [--keys 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from edge_kv.core.ratelimit import FixedWindow, SlidingLog, SlidingWindowCounter, TokenBucket
from edge_kv.origin._scripts import LuaScript
from edge_kv.origin.ratelimit import RateLimiter, RateLimiterUnavailable
from edge_kv.origin.testing import RedisServer

Decide = Callable[[str], Awaitable[bool]]
UNAVAILABLE = [0]  # edge_kv decisions that timed out (fail-closed), reported with the table
LIMIT, PERIOD_S = 10, 1


async def make_floor(url: str, concurrency: int) -> tuple[Decide, Callable[[], Awaitable[None]]]:
    client = aioredis.Redis.from_url(url, max_connections=concurrency)
    trivial = LuaScript("return 1", name="trivial")

    async def decide(key: str) -> bool:
        return bool(await trivial.run(client, [key], [1]))

    return decide, client.aclose


def make_edge_kv(
    policies: Any, autopipeline: bool = True
) -> Callable[[str, int], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]:
    async def factory(url: str, concurrency: int) -> tuple[Decide, Callable[[], Awaitable[None]]]:
        client = aioredis.Redis.from_url(url, max_connections=concurrency)
        limiter = RateLimiter(client, policies, autopipeline=autopipeline)  # production defaults

        async def decide(key: str) -> bool:
            try:
                return (await limiter.hit(key)).allowed
            except RateLimiterUnavailable:  # over the 0.25 s default timeout: counted, not fatal
                UNAVAILABLE[0] += 1
                return False

        return decide, client.aclose

    return factory


def make_limits(kind: str) -> Callable[[str, int], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]:
    async def factory(url: str, concurrency: int) -> tuple[Decide, Callable[[], Awaitable[None]]]:
        from limits import RateLimitItemPerSecond
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

        storage = RedisStorage(
            url.replace("redis://", "async+redis://"), implementation="redispy", max_connections=concurrency
        )
        strategy = (MovingWindowRateLimiter if kind == "moving" else SlidingWindowCounterRateLimiter)(storage)
        item = RateLimitItemPerSecond(LIMIT, PERIOD_S)

        async def decide(key: str) -> bool:
            return bool(await strategy.hit(item, key))

        async def close() -> None:
            return None

        return decide, close

    return factory


async def make_pyrate(url: str, concurrency: int) -> tuple[Decide, Callable[[], Awaitable[None]]]:
    from pyrate_limiter import (
        GCRA,
        BucketFactory,
        Duration,
        Limiter,
        Rate,
        RateItem,
        RedisStateStore,
        StateBucket,
    )

    client = aioredis.Redis.from_url(url, max_connections=concurrency)
    rates = [Rate(LIMIT, Duration.SECOND * PERIOD_S)]

    class PerKey(BucketFactory):
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


async def run_slice(
    decide: Decide, names: list[str], concurrency: int, seconds: float, seed: int
) -> tuple[int, int, float]:
    """``concurrency`` tasks deciding back to back for ``seconds``: (decisions, admitted, elapsed)."""
    done = allowed = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + seconds

    async def worker(i: int) -> None:
        nonlocal done, allowed
        rng = random.Random(seed * 1000 + i)
        while loop.time() < deadline:
            ok = await decide(rng.choice(names))
            done += 1
            allowed += ok

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done, allowed, loop.time() - start


CONTENDERS: list[tuple[str, Any]] = [
    ("floor: EVALSHA trivial script", make_floor),
    ("edge_kv token bucket (GCRA)", make_edge_kv(TokenBucket(LIMIT, LIMIT / PERIOD_S))),
    (
        "edge_kv token bucket, autopipeline=False",
        make_edge_kv(TokenBucket(LIMIT, LIMIT / PERIOD_S), autopipeline=False),
    ),
    ("edge_kv sliding log", make_edge_kv(SlidingLog(LIMIT, PERIOD_S))),
    ("edge_kv sliding window counter", make_edge_kv(SlidingWindowCounter(LIMIT, PERIOD_S))),
    ("edge_kv fixed window", make_edge_kv(FixedWindow(LIMIT, PERIOD_S))),
    (
        "edge_kv tiers: bucket + log 600/min",
        make_edge_kv([TokenBucket(LIMIT, LIMIT / PERIOD_S, name="s"), SlidingLog(600, 60, name="m")]),
    ),
    ("limits moving window (async redis)", make_limits("moving")),
    ("limits sliding window counter (async redis)", make_limits("sliding")),
    ("pyrate-limiter GCRA StateBucket (redis)", make_pyrate),
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="total measured time per contender")
    parser.add_argument("--slice", type=float, default=0.5, help="contenders take turns in slices this long")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[32], help="one table per value, e.g. 32 256"
    )
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument(
        "--only", default="", help="substring filter on contender names (the floor always runs)"
    )
    args = parser.parse_args()
    chosen = [(n, f) for n, f in CONTENDERS if args.only in n or n.startswith("floor")]
    for concurrency in args.concurrency:
        await bench(chosen, args, concurrency)


async def bench(chosen: list[tuple[str, Any]], args: argparse.Namespace, concurrency: int) -> None:
    names = [f"user:{i}" for i in range(args.keys)]
    totals = {name: [0, 0, 0.0] for name, _ in chosen}
    with RedisServer() as server:
        admin = aioredis.Redis.from_url(server.url)
        version = (await admin.info("server"))["redis_version"]
        running = []
        for name, factory in chosen:
            decide, close = await factory(server.url, concurrency)
            for i in range(0, concurrency, 16):  # warm connections and scripts, 16 at a time
                await asyncio.gather(*(decide(k) for k in names[i : i + 16]))
            running.append((name, decide, close))
        await admin.flushall()
        # Contenders take turns in short slices, rotating the order, so load from anything
        # else on the machine is spread evenly over all of them.
        slices = max(1, round(args.seconds / args.slice))
        for s in range(slices):
            k = s % len(running)
            for name, decide, _ in running[k:] + running[:k]:
                done, ok, elapsed = await run_slice(decide, names, concurrency, args.slice, s)
                totals[name][0] += done
                totals[name][1] += ok
                totals[name][2] += elapsed
        for _, _, close in running:
            await close()
        await admin.aclose()
    rate = {name: t[0] / t[2] for name, t in totals.items()}
    if UNAVAILABLE[0]:
        print(f"({UNAVAILABLE[0]} edge_kv decisions exceeded the 0.25 s timeout)")
        UNAVAILABLE[0] = 0
    floor = rate[chosen[0][0]]
    ours = rate.get("edge_kv token bucket (GCRA)")
    print(
        f"redis-server {version}, Python {sys.version.split()[0]}, concurrency {concurrency}, "
        f"{args.keys} keys, limit {LIMIT}/{PERIOD_S}s per key, {slices} slices of {args.slice:g} s each\n"
    )
    print("| contender | decisions/s | vs floor | edge_kv token bucket vs it | admitted |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, _ in chosen:
        vs_it = f"{ours / rate[name]:.2f}x" if ours else "-"
        admitted = totals[name][1] / max(1, int(totals[name][0]))
        print(f"| {name} | {rate[name]:,.0f} | {rate[name] / floor:.2f}x | {vs_it} | {admitted:.0%} |")


if __name__ == "__main__":
    asyncio.run(main())
