#!/usr/bin/env python
"""Per-call overhead of edge_kv's breaker and bulkhead vs a bare call and competitors.

Same process, same event loop, same throwaway redis-server for the shared-state rows.
The contenders of a group are interleaved: each group runs ``--slices`` rounds, and every
round times one slice of ``--calls / --slices`` calls of each contender (in a rotating
order), so a burst of load elsewhere on the machine hits all of them alike. Prints a
markdown table: microseconds per call (median over the slices; best slice in brackets),
overhead over the bare call, and each row's time relative to edge_kv's row of the group.

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python scripts/bench_resilience.py [--calls 200000] [--redis-calls 6000] [--slices 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import aiolimiter
import purgatory
import pybreaker
import redis.asyncio as aioredis

from edge_kv.origin.resilience import BreakerConfig, Bulkhead, CircuitBreaker
from edge_kv.origin.resilience.breaker_redis import RedisBreakerStore
from edge_kv.origin.testing import RedisServer

Op = Callable[[], Awaitable[object]]


async def dep() -> int:
    return 1


async def interleaved(ops: list[Op], calls: int, slices: int) -> list[tuple[float, float]]:
    """(median, best) per-call µs of each op over ``slices`` rounds of ``calls // slices``
    calls each; within a round the ops take turns, the starting op rotating."""
    per = max(1, calls // slices)
    for op in ops:  # warm-up
        for _ in range(min(per, 500)):
            await op()
    samples: list[list[float]] = [[] for _ in ops]
    for r in range(slices):
        for k in range(len(ops)):
            i = (r + k) % len(ops)
            op = ops[i]
            t0 = time.perf_counter()
            for _ in range(per):
                await op()
            samples[i].append((time.perf_counter() - t0) / per * 1e6)
    return [(statistics.median(s), min(s)) for s in samples]


async def contended(enter: Callable[[], object], workers: int, per_worker: int) -> float:
    """Per-call µs with ``workers`` tasks sharing one limiter of 10 (each call yields once)."""

    async def worker() -> None:
        for _ in range(per_worker):
            async with enter():  # type: ignore[attr-defined]
                await asyncio.sleep(0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return (time.perf_counter() - t0) / (workers * per_worker) * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--redis-calls", type=int, default=6_000)
    ap.add_argument("--slices", type=int, default=40)
    a = ap.parse_args()
    rows: list[tuple[str, str, float, float, bool]] = []  # group, name, median µs, best µs, is_ours

    async def group(name: str, contenders: list[tuple[str, Op]], calls: int) -> None:
        """Interleave the group's contenders; the first one is edge_kv's reference row."""
        results = await interleaved([op for _, op in contenders], calls, a.slices)
        for k, ((label, _), (med, best)) in enumerate(zip(contenders, results, strict=True)):
            rows.append((name, label, med, best, k == 0))

    bare_us = (await interleaved([dep], a.calls, a.slices))[0][0]

    # -- breakers, local state ----------------------------------------------------------
    cb = CircuitBreaker("bench", BreakerConfig())
    decorated = cb(dep)

    async def ours_guard() -> object:
        async with cb.guard():
            return await dep()

    pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    async def pybreaker_call() -> object:
        with pb.calling():
            return await dep()

    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
    purg = factory("bench")(dep)

    await group(
        "breaker (local)",
        [
            ("edge_kv CircuitBreaker.call", lambda: cb.call(dep)),
            ("edge_kv @breaker decorator", decorated),
            ("edge_kv async with guard()", ours_guard),
            ("pybreaker 1.4 calling()", pybreaker_call),
            ("purgatory 3.0 decorator (in-memory)", purg),
        ],
        a.calls,
    )

    # -- bulkheads ------------------------------------------------------------------------
    bh = Bulkhead("bench", 10, max_queue=1000)
    sem = asyncio.Semaphore(10)
    lim = aiolimiter.AsyncLimiter(1e12, 1)

    async def ours_bh() -> object:
        async with bh:
            return await dep()

    async def sem_call() -> object:
        async with sem:
            return await dep()

    async def lim_call() -> object:
        async with lim:
            return await dep()

    await group(
        "bulkhead (uncontended)",
        [
            ("edge_kv async with Bulkhead", ours_bh),
            ("edge_kv Bulkhead.call", lambda: bh.call(dep)),
            ("asyncio.Semaphore", sem_call),
            ("aiolimiter 1.3 AsyncLimiter", lim_call),
        ],
        a.calls,
    )
    per = max(1, a.calls // 100 // a.slices)
    samples: list[list[float]] = [[], []]
    for r in range(a.slices):
        for k in range(2):
            i = (r + k) % 2
            samples[i].append(await contended(lambda: bh if i == 0 else sem, 100, per))  # noqa: B023
    for i, label in enumerate(("edge_kv Bulkhead", "asyncio.Semaphore")):
        rows.append(
            ("bulkhead (100 tasks, limit 10)", label, statistics.median(samples[i]), min(samples[i]), i == 0)
        )

    # -- breakers, state shared in Redis ------------------------------------------------------
    with RedisServer() as server:
        client = aioredis.Redis.from_url(server.url)
        shared = CircuitBreaker("bench", BreakerConfig(), store=RedisBreakerStore(client))
        pfactory = purgatory.AsyncCircuitBreakerFactory(
            default_threshold=5, default_ttl=30, uow=purgatory.AsyncRedisUnitOfWork(server.url)
        )
        await pfactory.initialize()
        ppurg = pfactory("bench")(dep)
        await group(
            "breaker (Redis-shared)",
            [
                ("edge_kv RedisBreakerStore", lambda: shared.call(dep)),
                ("purgatory 3.0 AsyncRedisUnitOfWork", ppurg),
            ],
            a.redis_calls,
        )
        await client.aclose()

    print(
        f"bare `await dep()`: {bare_us:.3f} µs/call; {a.calls} calls per contender "
        f"({a.redis_calls} for Redis rows) in {a.slices} interleaved slices\n"
    )
    print("| group | implementation | µs/call (median) | best slice | overhead µs | time vs edge_kv |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    ours = {g: us for g, _, us, _, o in rows if o}
    for name, label, us, best, _ in rows:
        print(f"| {name} | {label} | {us:.2f} | {best:.2f} | {us - bare_us:.2f} | {us / ours[name]:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
