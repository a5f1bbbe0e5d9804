#!/usr/bin/env python3
"""Benchmark: edge_kv origin locks against redis-py's Lock, aioredlock and pottery.

Starts its own redis-server processes (one for single-node runs, five for Redlock).
Every contender runs in the same process, on the same servers, with the same
concurrency, for ``--seconds`` each, in one run; servers are flushed in between.

1. Uncontended single node: ``--concurrency`` tasks, each on its own resource, loop
   acquire+release. edge_kv ``RedisLock`` vs ``redis.asyncio.lock.Lock``.
2. Redlock on 5 nodes, same shape: edge_kv ``Redlock`` vs ``aioredlock.Aioredlock``
   vs ``pottery.AIORedlock`` (pottery's asyncio Redlock; its ``Redlock`` is the blocking
   twin with the same protocol). Also reports Redlock pair latency / single-node pair latency.
3. Contended: 32 tasks, one resource, acquire (blocking) + release, defaults of each
   library's retry/poll: throughput and wait percentiles.

Needs the ``bench`` extra: ``.venv/bin/pip install -e '.[dev,bench]'``. Usage::

    .venv/bin/python scripts/bench_locks.py [--seconds 2] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from edge_kv.origin.locks import RedisLock, Redlock
from edge_kv.origin.testing import RedisServer

Pair = Callable[[str], Awaitable[None]]


class Result:
    def __init__(self, name: str, ops: int, seconds: float, lat: list[float]) -> None:
        self.name, self.ops, self.seconds = name, ops, seconds
        lat.sort()
        self.rate = ops / seconds
        self.p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
        self.p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        self.mean = statistics.fmean(lat) * 1000 if lat else float("nan")


async def drive(
    name: str, make_pair: Callable[[int], Pair], workers: int, seconds: float, shared: bool
) -> Result:
    """Run ``workers`` tasks; each repeats its pair on its own resource (or one shared)."""
    stop = time.monotonic() + seconds
    lat: list[float] = []
    count = 0

    async def worker(i: int) -> None:
        nonlocal count
        pair = make_pair(i)
        resource = "shared" if shared else f"r{i}"
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            await pair(resource)
            lat.append(time.perf_counter() - t0)
            count += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    return Result(name, count, time.monotonic() - t0, lat)


def table(title: str, results: list[Result], base: str, metric: str = "pairs/s") -> None:
    ref = next(r for r in results if r.name == base)
    print(f"\n### {title}\n")
    print(f"| contender | {metric} | p50 ms | p99 ms | throughput vs {base} |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r.name} | {r.rate:,.0f} | {r.p50:.2f} | {r.p99:.2f} | {r.rate / ref.rate:.2f}x |")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--contended-workers", type=int, default=32)
    args = ap.parse_args()
    logging.getLogger("aioredlock").setLevel(logging.CRITICAL)
    secs, conc = args.seconds, args.concurrency

    servers = [RedisServer().start() for _ in range(5)]
    try:
        clients = [aioredis.Redis.from_url(s.url, max_connections=64) for s in servers]
        one = clients[0]

        # 1. uncontended single node -------------------------------------------------------
        def ours(_: int) -> Pair:
            async def pair(res: str) -> None:
                lock = RedisLock(one, res, ttl_ms=10_000)
                await lock.acquire()
                await lock.release()

            return pair

        def redispy(_: int) -> Pair:
            async def pair(res: str) -> None:
                lock = one.lock(res, timeout=10)
                await lock.acquire()
                await lock.release()

            return pair

        single: list[Result] = []
        for name, fn in (("edge_kv RedisLock", ours), ("redis-py Lock", redispy)):
            await one.flushall()
            single.append(await drive(name, fn, conc, secs, shared=False))
        table(f"Uncontended acquire+release, 1 node, {conc} tasks", single, "redis-py Lock")

        # 2. Redlock on 5 nodes --------------------------------------------------------------
        def ours_rl(_: int) -> Pair:
            async def pair(res: str) -> None:
                lock = Redlock(clients, res, ttl_ms=10_000)
                await lock.acquire()
                await lock.release()

            return pair

        import aioredlock  # competitor, bench extra

        manager = aioredlock.Aioredlock(
            [{"host": "127.0.0.1", "port": s.port} for s in servers], retry_count=100
        )

        def aio_rl(_: int) -> Pair:
            async def pair(res: str) -> None:
                lock = await manager.lock(res, lock_timeout=10)
                await manager.unlock(lock)

            return pair

        from pottery import AIORedlock  # competitor, bench extra

        def pottery_rl(_: int) -> Pair:
            async def pair(res: str) -> None:
                lock = AIORedlock(key=res, masters=set(clients), auto_release_time=10)
                await lock.acquire()
                await lock.release()

            return pair

        multi: list[Result] = []
        contenders: list[tuple[str, Callable[[int], Pair]]] = [
            ("edge_kv Redlock", ours_rl),
            ("aioredlock", aio_rl),
            ("pottery AIORedlock", pottery_rl),
        ]
        for name, make in contenders:
            for c in clients:
                await c.flushall()
            multi.append(await drive(name, make, conc, secs, shared=False))
        await manager.destroy()
        table(f"Uncontended Redlock acquire+release, 5 nodes, {conc} tasks", multi, "aioredlock")
        for c in clients:
            await c.flushall()
        solo_single = await drive("edge_kv RedisLock", ours, 1, secs, shared=False)
        solo_multi = await drive("edge_kv Redlock", ours_rl, 1, secs, shared=False)
        print(
            f"\nOne task, pair latency: RedisLock {solo_single.mean:.3f} ms, Redlock(5) "
            f"{solo_multi.mean:.3f} ms -> Redlock/single = {solo_multi.mean / solo_single.mean:.2f}x"
        )

        # 3. contended: 32 workers, one resource ---------------------------------------------
        workers = args.contended_workers

        def ours_c(_: int) -> Pair:
            async def pair(res: str) -> None:
                lock = RedisLock(one, res, ttl_ms=10_000, blocking_timeout=None)
                await lock.acquire()
                await lock.release()

            return pair

        def redispy_c(_: int) -> Pair:
            async def pair(res: str) -> None:
                lock = one.lock(res, timeout=10)
                await lock.acquire()
                await lock.release()

            return pair

        def ours_rl_c(_: int) -> Pair:
            async def pair(res: str) -> None:
                lock = Redlock(clients, res, ttl_ms=10_000, blocking_timeout=None)
                await lock.acquire()
                await lock.release()

            return pair

        contended: list[Result] = []
        for name, make_c in (
            ("edge_kv RedisLock", ours_c),
            ("redis-py Lock", redispy_c),
            ("edge_kv Redlock (5 nodes)", ours_rl_c),
        ):
            for c in clients:
                await c.flushall()
            contended.append(await drive(name, make_c, workers, secs, shared=True))
        print(f"\n(contended: latency = wait + acquire + release of one pair; {workers} tasks, one resource)")
        table(f"Contended, {workers} tasks, one resource", contended, "redis-py Lock")
        for c in clients:
            await c.aclose()
    finally:
        for s in servers:
            s.close()
    print(f"\nrun id {uuid.uuid4().hex[:8]}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    asyncio.run(main())
