#!/usr/bin/env python3
"""Benchmark: reliable messaging through the outbox vs a bare Redis Streams loop.

Starts its own throwaway redis-server; uses the PostgreSQL at EDGE_KV_PG_DSN (default
postgresql://postgres@127.0.0.1:5432/test), in tables with a random suffix dropped at the end.

  * end to end - events/s and p50/p99 commit-to-consumer latency:
      bare    XADD by --writers producers, XREADGROUP + XACK by one consumer;
      outbox  Outbox.add in its own transaction per event (the same producers), one
              Relay, one StreamConsumer (trivial handler), and again with the Inbox
              (the handler's transaction records the event id); the consumer runs 8 keys at once;
    the two setups alternate, --rounds rounds each, best round kept (shared machine).
  * relay throughput - a backlog of --backlog events drained by 1 and by 4 relays: on
    Redis over loopback, and through a broker that adds 2 ms to every publish call.
  * saga transitions/s - --sagas three-step sagas (5 persisted transitions each).

    .venv/bin/python scripts/bench_messaging.py [--events 2000] [--writers 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import redis.asyncio as aioredis
from psycopg import sql

from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import (
    Delivery,
    Inbox,
    Message,
    Outbox,
    RedisStreamsPublisher,
    Relay,
    SagaDefinition,
    SagaOrchestrator,
    SagaStep,
    StepContext,
    StreamConsumer,
)
from edge_kv.origin.testing import RedisServer

PG_DSN = os.environ.get("EDGE_KV_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


class Run:
    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.started = 0.0
        self.finished = 0.0

    def receive(self, event_id: str) -> None:
        sent = self.sent.get(event_id)
        if sent is not None and event_id not in self.__dict__.setdefault("_seen", set()):
            self.__dict__["_seen"].add(event_id)
            self.latencies.append(time.perf_counter() - sent)
            self.finished = time.perf_counter()

    def summary(self, n: int) -> tuple[float, float, float]:
        lat = sorted(self.latencies)
        assert len(lat) == n, f"received {len(lat)} of {n}"
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return n / (self.finished - self.started), statistics.median(lat) * 1000, p99 * 1000


async def _producers(n: int, writers: int, one: Callable[[int], Awaitable[None]]) -> None:
    async def worker(w: int) -> None:
        for i in range(w, n, writers):
            await one(i)

    await asyncio.gather(*(worker(w) for w in range(writers)))


async def _wait(run: Run, n: int) -> None:
    async with asyncio.timeout(30):
        while len(run.latencies) < n:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def bare(redis: aioredis.Redis, n: int, writers: int) -> tuple[float, float, float]:
    stream = f"bench-bare-{secrets.token_hex(3)}"
    await redis.xgroup_create(stream, "g", id="$", mkstream=True)
    run = Run()
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            reply = await redis.xreadgroup("g", "c", {stream: ">"}, count=100, block=50)
            ids = []
            for entry_id, fields in reply[0][1] if reply else []:
                run.receive(fields[b"id"].decode())
                ids.append(entry_id)
            if ids:
                await redis.xack(stream, "g", *ids)

    async def one(i: int) -> None:
        eid = f"b{i}"
        run.sent[eid] = time.perf_counter()
        fields: dict[Any, Any] = Message(
            id=eid, topic=stream, key=f"k{i % 100}", payload={"i": i}
        ).to_fields()
        await redis.xadd(stream, fields)

    task = asyncio.create_task(consume())
    run.started = time.perf_counter()
    await _producers(n, writers, one)
    await _wait(run, n)
    stop.set()
    await task
    await redis.delete(stream)
    return run.summary(n)


async def through_outbox(
    pool: PgPool, redis: aioredis.Redis, suffix: str, n: int, writers: int, inbox: bool
) -> tuple[float, float, float]:
    tag = secrets.token_hex(3)
    outbox = Outbox(f"bench_outbox_{suffix}")
    stream = f"bench-outbox-{tag}"
    run = Run()
    stop = asyncio.Event()
    relay = Relay(outbox, pool, RedisStreamsPublisher(redis), poll_interval_s=0.5)

    async def handler(d: Delivery) -> None:
        run.receive(d.message.id)

    async def effect(conn: psycopg.AsyncConnection[Any], m: Message) -> None:
        run.receive(m.id)

    box = Inbox(pool, consumer=f"bench-{tag}", table=f"bench_inbox_{suffix}")
    consumer = StreamConsumer(
        redis, stream, "g", "c", box.handler(effect) if inbox else handler, block_s=0.05, concurrency=8
    )
    await consumer.ensure_group("$")

    async def one(i: int) -> None:
        async with pool.connection() as conn:
            async with conn.transaction():
                eid = await outbox.add(conn, topic=stream, key=f"k{i % 100}", payload={"i": i})
            run.sent[eid] = time.perf_counter()  # committed

    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    await asyncio.sleep(0.1)
    run.started = time.perf_counter()
    await _producers(n, writers, one)
    await _wait(run, n)
    stop.set()
    await asyncio.gather(*tasks)
    await redis.delete(stream)
    return run.summary(n)


class SlowBroker:
    """A publisher whose every ``publish_many`` call takes ``latency_s`` longer (a remote
    broker's round trip; the messages of one call are still sent together)."""

    def __init__(self, inner: RedisStreamsPublisher, latency_s: float) -> None:
        self.inner = inner
        self.latency_s = latency_s

    async def publish_many(self, messages: Sequence[Message]) -> list[BaseException | None]:
        await asyncio.sleep(self.latency_s)
        return await self.inner.publish_many(messages)


async def relay_throughput(
    pool: PgPool,
    redis: aioredis.Redis,
    suffix: str,
    backlog: int,
    relays: int,
    *,
    keys: int = 100,
    max_keys: int | None = None,
    latency_s: float = 0.0,
) -> float:
    """Events/s draining ``backlog`` events on ``keys`` keys; ``max_keys`` per relay
    (default: the keys split between the relays), each relay draining on its own."""
    outbox = Outbox(f"bench_outbox_{suffix}", notify=False)
    await outbox.cleanup(pool)
    stream = f"bench-relay-{secrets.token_hex(3)}"
    async with pool.connection() as conn:
        for start in range(0, backlog, 500):
            async with conn.transaction():
                for i in range(start, min(backlog, start + 500)):
                    await outbox.add(conn, topic=stream, key=f"k{i % keys}", payload={"i": i})
    pub: Any = RedisStreamsPublisher(redis)
    if latency_s:
        pub = SlowBroker(pub, latency_s)
    per_relay = max_keys or max(1, keys // relays)
    workers = [Relay(outbox, pool, pub, batch_size=500, max_keys=per_relay) for _ in range(relays)]
    t0 = time.perf_counter()
    while True:  # a relay stops when nothing is claimable; the others may still hold keys
        await asyncio.gather(*(r.drain() for r in workers))
        if (await outbox.stats(pool)).pending == 0:
            break
    elapsed = time.perf_counter() - t0
    assert await redis.xlen(stream) == backlog
    await redis.delete(stream)
    return backlog / elapsed


async def saga_rate(pool: PgPool, suffix: str, sagas: int) -> float:
    async def step(ctx: StepContext) -> int:
        return ctx.step

    orch = SagaOrchestrator(
        pool,
        [SagaDefinition("bench", [SagaStep(f"s{i}", step, None) for i in range(3)])],
        table=f"bench_sagas_{suffix}",
    )
    await orch.migrate()
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            await orch.start("bench", {"i": i})

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(sagas)))
    return sagas * 5 / (time.perf_counter() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backlog", type=int, default=10_000)
    ap.add_argument("--sagas", type=int, default=300)
    args = ap.parse_args()
    suffix = secrets.token_hex(4)
    with RedisServer() as server:
        redis = aioredis.Redis.from_url(server.url)
        # 8 producers + 8 consumer lanes + the relay's LISTEN and batch connections
        async with PgPool(PG_DSN, size=24) as pool:
            await Outbox(f"bench_outbox_{suffix}").migrate(pool)
            await Inbox(pool, consumer="x", table=f"bench_inbox_{suffix}").migrate()
            try:
                best: dict[str, tuple[float, float, float]] = {}
                cells: tuple[tuple[str, Callable[[], Awaitable[tuple[float, float, float]]]], ...] = (
                    ("bare XADD + XREADGROUP", lambda: bare(redis, args.events, args.writers)),
                    (
                        "outbox -> relay -> consumer",
                        lambda: through_outbox(pool, redis, suffix, args.events, args.writers, False),
                    ),
                    (
                        "  ... + inbox (PostgreSQL)",
                        lambda: through_outbox(pool, redis, suffix, args.events, args.writers, True),
                    ),
                )
                for _ in range(args.rounds):  # interleaved
                    for name, fn in cells:
                        r = await fn()
                        if name not in best or r[0] > best[name][0]:
                            best[name] = r
                base = best["bare XADD + XREADGROUP"]
                print(f"end to end: {args.events} events, {args.writers} producers, best of {args.rounds}")
                print(f"{'path':30} {'events/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>7}")
                for name, (rate, p50, p99) in best.items():
                    print(
                        f"{name:30} {rate:9.0f} {rate / base[0]:6.3f} {p50:8.2f} {p99:8.2f} {p50 / base[1]:7.1f}"
                    )
                print(f"\nrelay throughput, backlog {args.backlog} (events/s, each relay in its own task):")
                relay_cases: tuple[tuple[str, dict[str, Any]], ...] = (
                    ("Redis on loopback, 100 keys, keys split between relays", {}),
                    (
                        "broker +2 ms per publish call, 400 keys, max_keys=50",
                        {"keys": 400, "max_keys": 50, "latency_s": 0.002},
                    ),
                )
                for label, kw in relay_cases:
                    one = await relay_throughput(pool, redis, suffix, args.backlog, 1, **kw)
                    four = await relay_throughput(pool, redis, suffix, args.backlog, 4, **kw)
                    print(f"  {label}: 1 relay {one:.0f}/s, 4 relays {four:.0f}/s (x{four / one:.2f})")
                rate = await saga_rate(pool, suffix, args.sagas)
                print(f"saga: {args.sagas} three-step sagas, 8 at once: {rate:.0f} transitions/s")
            finally:
                async with pool.connection() as conn:
                    for t in ("outbox", "outbox_dead", "inbox", "sagas"):
                        await conn.execute(
                            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"bench_{t}_{suffix}"))
                        )
                await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
