#!/usr/bin/env python3
"""Benchmark: edge_kv origin locks against redis-py's Lock, aioredlock and pottery.

Starts its own redis-server processes (one for single-node runs, five for Redlock).
Every contender runs in the same process, on the same servers, with the same
concurrency, for ``--seconds`` each, in one run. The contenders of a case are
interleaved: they take turns in slices of ``--slice`` seconds (the starting contender
rotating), so a burst of load elsewhere on the machine hits all of them alike rather
than whichever ran at the time; servers are flushed before each case.

1. Uncontended single node: ``--concurrency`` tasks, each on its own resource, loop
   acquire+release. edge_kv ``RedisLock`` vs ``redis.asyncio.lock.Lock``.
2. Redlock on 5 nodes, same shape: edge_kv ``Redlock`` vs ``aioredlock.Aioredlock``
   vs ``pottery.AIORedlock`` (pottery's asyncio Redlock; its ``Redlock`` is the blocking
   twin with the same protocol).
   Then one task each, ``RedisLock`` (1 node) and ``Redlock`` (5 nodes), auto-pipelined
   (the default) and with ``autopipeline=False``, all four interleaved: Redlock pair
   latency / single-node pair latency. Production defaults throughout (``op_timeout``).
3. Contended: 32 tasks, one resource, acquire (blocking) + release, defaults of each
   library's retry/poll: throughput and wait percentiles.

Needs the ``bench`` extra: ``.venv/bin/pip install -e '.[dev,bench]'``. Usage::

    .venv/bin/python scripts/bench_locks.py [--seconds 2] [--slice 0.25] [--concurrency 16]
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

from edge_kv.origin import _redis
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
    make_pair: Callable[[int], Pair], workers: int, seconds: float, shared: bool
) -> tuple[int, float, list[float]]:
    """Run ``workers`` tasks for ``seconds``; each repeats its pair on its own resource
    (or one shared). Returns (pairs, elapsed seconds, latencies)."""
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
    return count, time.monotonic() - t0, lat


Contender = tuple[str, Callable[[int], Pair]]


async def interleaved(
    contenders: list[Contender], workers: int, seconds: float, slice_s: float, shared: bool
) -> list[Result]:
    """Each contender runs ``seconds`` in total, in turns of ``slice_s``."""
    slices = max(1, round(seconds / slice_s))
    totals = [(0, 0.0, list[float]()) for _ in contenders]
    for r in range(slices):
        for k in range(len(contenders)):
            i = (r + k) % len(contenders)
            count, elapsed, lat = await drive(contenders[i][1], workers, seconds / slices, shared)
            await _redis.wait_detached()  # work left in the background is not the next one's
            c0, e0, l0 = totals[i]
            l0.extend(lat)
            totals[i] = (c0 + count, e0 + elapsed, l0)
    return [Result(name, c, e, lat) for (name, _), (c, e, lat) in zip(contenders, totals, strict=True)]


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
    ap.add_argument("--slice", type=float, default=0.25)
    ap.add_argument(
        "--contended-slice",
        type=float,
        default=1.0,
        help="longer turns when contended: a turn ends only once every waiter got the lock once",
    )
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--contended-workers", type=int, default=32)
    ap.add_argument(
        "--cases",
        default="single,redlock,solo,contended",
        help="comma-separated subset of: single, redlock, solo (one task, the 1.5x target), contended",
    )
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    logging.getLogger("aioredlock").setLevel(logging.CRITICAL)
    secs, conc, sl = args.seconds, args.concurrency, args.slice

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

        if "single" in cases:
            await one.flushall()
            single = await interleaved(
                [("edge_kv RedisLock", ours), ("redis-py Lock", redispy)], conc, secs, sl, shared=False
            )
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

        if "redlock" in cases:
            contenders: list[Contender] = [
                ("edge_kv Redlock", ours_rl),
                ("aioredlock", aio_rl),
                ("pottery AIORedlock", pottery_rl),
            ]
            for c in clients:
                await c.flushall()
            multi = await interleaved(contenders, conc, secs, sl, shared=False)
            await manager.destroy()
            table(f"Uncontended Redlock acquire+release, 5 nodes, {conc} tasks", multi, "aioredlock")

        def plain(_: int) -> Pair:  # the unbatched path: redis-py's pool, one call at a time
            async def pair(res: str) -> None:
                lock = RedisLock(one, res, ttl_ms=10_000, autopipeline=False)
                await lock.acquire()
                await lock.release()

            return pair

        def plain_rl(_: int) -> Pair:
            async def pair(res: str) -> None:
                lock = Redlock(clients, res, ttl_ms=10_000, autopipeline=False)
                await lock.acquire()
                await lock.release()

            return pair

        if "solo" in cases:
            for c in clients:
                await c.flushall()
            solo = await interleaved(
                [
                    ("edge_kv RedisLock", ours),
                    ("edge_kv Redlock", ours_rl),
                    ("RedisLock autopipeline=False", plain),
                    ("Redlock autopipeline=False", plain_rl),
                ],
                1,
                secs,
                sl,
                shared=False,
            )
            await _redis.wait_detached()
            print("\nOne task, pair latency (interleaved, production defaults):\n")
            print("| contender | p50 ms | mean ms |")
            print("| --- | ---: | ---: |")
            for r in solo:
                print(f"| {r.name} | {r.p50:.3f} | {r.mean:.3f} |")
            for tag, one_node, five in (
                ("auto-pipelined", solo[0], solo[1]),
                ("autopipeline=False", solo[2], solo[3]),
            ):
                print(
                    f"\nRedlock(5)/RedisLock, {tag}: {five.p50 / one_node.p50:.2f}x (p50), "
                    f"{five.mean / one_node.mean:.2f}x (mean)"
                )
            print(
                f"RedisLock auto-pipelined / autopipeline=False: {solo[0].mean / solo[2].mean:.2f}x (mean latency)"
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

        if "contended" in cases:
            for c in clients:
                await c.flushall()
            contended = await interleaved(
                [
                    ("edge_kv RedisLock", ours_c),
                    ("redis-py Lock", redispy_c),
                    ("edge_kv Redlock (5 nodes)", ours_rl_c),
                ],
                workers,
                secs,
                args.contended_slice,
                shared=True,
            )
            await _redis.wait_detached()
            print(
                f"\n(contended: latency = wait + acquire + release of one pair; {workers} tasks, one resource)"
            )
            table(f"Contended, {workers} tasks, one resource", contended, "redis-py Lock")
        for c in clients:
            await c.aclose()
    finally:
        for s in servers:
            s.close()
    print(f"\nrun id {uuid.uuid4().hex[:8]}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    asyncio.run(main())
