#!/usr/bin/env python
"""Per-call overhead of edge_kv's breaker and bulkhead vs a bare call and competitors.

Same process, same event loop, same throwaway redis-server for the shared-state rows.
Prints a markdown table: microseconds per call (best of ``--rounds``), overhead over the
bare call, and each row's time relative to edge_kv's row of the same group.

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python scripts/bench_resilience.py [--calls 20000] [--redis-calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
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


async def measure(op: Op, calls: int, rounds: int) -> float:
    """Best per-call time in microseconds."""
    for _ in range(min(calls, 500)):
        await op()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            await op()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


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
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--redis-calls", type=int, default=3_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rows: list[tuple[str, str, float, bool]] = []  # group, name, µs, is_ours

    async def add(group: str, name: str, op: Op, calls: int, ours: bool = False) -> None:
        rows.append((group, name, await measure(op, calls, a.rounds), ours))

    bare_us = await measure(dep, a.calls, a.rounds)

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

    await add("breaker (local)", "edge_kv CircuitBreaker.call", lambda: cb.call(dep), a.calls, True)
    await add("breaker (local)", "edge_kv @breaker decorator", decorated, a.calls)
    await add("breaker (local)", "edge_kv async with guard()", ours_guard, a.calls)
    await add("breaker (local)", "pybreaker 1.4 calling()", pybreaker_call, a.calls)
    await add("breaker (local)", "purgatory 3.0 decorator (in-memory)", purg, a.calls)

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

    await add("bulkhead (uncontended)", "edge_kv async with Bulkhead", ours_bh, a.calls, True)
    await add("bulkhead (uncontended)", "edge_kv Bulkhead.call", lambda: bh.call(dep), a.calls)
    await add("bulkhead (uncontended)", "asyncio.Semaphore", sem_call, a.calls)
    await add("bulkhead (uncontended)", "aiolimiter 1.3 AsyncLimiter", lim_call, a.calls)
    per = max(1, a.calls // 100)
    rows.append(
        ("bulkhead (100 tasks, limit 10)", "edge_kv Bulkhead", await contended(lambda: bh, 100, per), True)
    )
    rows.append(
        ("bulkhead (100 tasks, limit 10)", "asyncio.Semaphore", await contended(lambda: sem, 100, per), False)
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
        await add(
            "breaker (Redis-shared)",
            "edge_kv RedisBreakerStore",
            lambda: shared.call(dep),
            a.redis_calls,
            True,
        )
        await add("breaker (Redis-shared)", "purgatory 3.0 AsyncRedisUnitOfWork", ppurg, a.redis_calls)
        await client.aclose()

    print(
        f"bare `await dep()`: {bare_us:.3f} µs/call; {a.calls} calls ({a.redis_calls} for Redis rows), best of {a.rounds}\n"
    )
    print("| group | implementation | µs/call | overhead µs | time vs edge_kv |")
    print("| --- | --- | ---: | ---: | ---: |")
    ours = {g: us for g, _, us, o in rows if o}
    for group, name, us, _ in rows:
        print(f"| {group} | {name} | {us:.2f} | {us - bare_us:.2f} | {us / ours[group]:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
