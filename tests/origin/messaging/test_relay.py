"""The relay against a real Redis: 10,000 events on 100 keys through 4 concurrent
relays, LISTEN/NOTIFY wake-up, polling fallback, failing brokers."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import Message, Outbox, RedisStreamsPublisher, Relay

from .fakes import RecordingPublisher

EVENTS = 10_000
KEYS = 100
WRITERS = 4
PER_TXN = 20


async def _write(pool: PgPool, outbox: Outbox, topic: str, writer: int) -> None:
    """Writer ``w`` owns keys w, w+4, ...: each key's events get seq 0, 1, 2, ... in
    commit order (transactions of PER_TXN events, keys interleaved)."""
    keys = [f"key-{k}" for k in range(writer, KEYS, WRITERS)]
    per_key = EVENTS // KEYS
    events = [(k, s) for s in range(per_key) for k in keys]
    for i in range(0, len(events), PER_TXN):
        async with pool.connection() as conn, conn.transaction():
            for key, seq in sorted(events[i : i + PER_TXN]):
                await outbox.add(conn, topic=topic, key=key, payload={"seq": seq})


@pytest.mark.slow
async def test_ten_thousand_events_four_relays_per_key_order(
    pg_dsn: str, outbox: Outbox, redis: aioredis.Redis, stream: str
) -> None:
    async with PgPool(pg_dsn, size=14) as pool:
        pub = RedisStreamsPublisher(redis)
        relays = [
            Relay(outbox, pool, pub, batch_size=200, max_keys=25, poll_interval_s=0.2) for _ in range(4)
        ]
        stop = asyncio.Event()
        running = [asyncio.create_task(r.run(stop)) for r in relays]
        started = time.monotonic()
        await asyncio.gather(*(_write(pool, outbox, stream, w) for w in range(WRITERS)))
        deadline = time.monotonic() + 60
        while (await outbox.stats(pool)).pending and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.gather(*running)
        assert (await outbox.stats(pool)).pending == 0, "not every event was published within 60 s"

    entries = await redis.xrange(stream)
    seen: dict[str, list[int]] = defaultdict(list)
    for _, fields in entries:
        m = Message.from_fields(fields)
        seen[m.key].append(m.payload["seq"])
    assert len(seen) == KEYS
    for key, seqs in seen.items():
        assert seqs == list(range(EVENTS // KEYS)), f"{key}: lost, duplicated or reordered: {seqs[:20]}..."
    assert len(entries) == EVENTS
    counts = [r.metrics.published for r in relays]
    assert sum(counts) == EVENTS
    assert sum(1 for c in counts if c) >= 2, f"the relays did not share the work: {counts}"
    print(f"\n10k events, 4 relays: {elapsed:.2f}s, per relay {counts}")


async def test_notify_wakes_the_relay_and_polling_is_the_fallback(
    pool: PgPool, outbox: Outbox, redis: aioredis.Redis, stream: str
) -> None:
    pub = RedisStreamsPublisher(redis)
    stop = asyncio.Event()
    relay = Relay(outbox, pool, pub, poll_interval_s=5.0)
    task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.3)  # listening, nothing pending
    t0 = time.monotonic()
    async with pool.connection() as conn, conn.transaction():
        await outbox.add(conn, topic=stream, key="k", payload=1)
    while await redis.xlen(stream) == 0:
        assert time.monotonic() - t0 < 2.0, "NOTIFY did not wake the relay"
        await asyncio.sleep(0.01)
    assert relay.metrics.wakeups >= 1
    stop.set()
    await task

    # Without NOTIFY (another writer's outbox object with notify=False) the poll finds it.
    quiet = Outbox(outbox.table, notify=False)
    stop = asyncio.Event()
    relay = Relay(outbox, pool, pub, poll_interval_s=0.3)
    task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.1)
    async with pool.connection() as conn, conn.transaction():
        await quiet.add(conn, topic=stream, key="k", payload=2)
    t0 = time.monotonic()
    while await redis.xlen(stream) < 2:
        assert time.monotonic() - t0 < 2.0, "polling did not find the event"
        await asyncio.sleep(0.02)
    assert relay.metrics.wakeups == 0
    stop.set()
    await task


class _Raising:
    """A broken publisher: raises instead of returning per-message results."""

    async def publish_many(self, messages: Sequence[Message]) -> list[BaseException | None]:
        raise ConnectionError("broker down")


class _Hanging:
    async def publish_many(self, messages: Sequence[Message]) -> list[BaseException | None]:
        await asyncio.sleep(10)
        return [None] * len(messages)


@pytest.mark.parametrize("publisher", [_Raising(), _Hanging()], ids=["raising", "hanging"])
async def test_a_broker_that_raises_or_hangs_counts_as_a_failed_attempt(
    pool: PgPool, outbox: Outbox, publisher: _Raising | _Hanging
) -> None:
    async with pool.connection() as conn, conn.transaction():
        await outbox.add(conn, topic="t", key="k", payload=1, event_id="e")
    relay = Relay(outbox, pool, publisher, publish_timeout_s=0.2)
    assert await relay.run_once() == 0
    st = await outbox.stats(pool)
    assert (st.pending, st.retrying) == (1, 1)
    async with pool.connection() as conn:
        row = await (await conn.execute(f'SELECT attempts, last_error FROM "{outbox.table}"')).fetchone()
    assert row is not None and row[0] == 1 and ("broker down" in row[1] or "timed out" in row[1])
    assert await relay.run_once() == 0  # backing off: the key is not claimed again yet


async def test_redis_publisher_reports_a_down_server_per_message(
    pool: PgPool, outbox: Outbox, redis: aioredis.Redis
) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1)  # nothing listens on port 1
    try:
        pub = RedisStreamsPublisher(dead, timeout=1.0)
        results = await pub.publish_many([Message(id="a", topic="t", key="k", payload=None)])
        assert len(results) == 1 and results[0] is not None and "unreachable" in str(results[0])
    finally:
        await dead.aclose()
    # Custom stream routing and approximate trimming.
    sharded = RedisStreamsPublisher(redis, stream=lambda m: f"s:{m.key}", maxlen=1000)
    assert await sharded.publish_many([Message(id="b", topic="t", key="k1", payload={"a": [1]})]) == [None]
    [(_, fields)] = await redis.xrange("s:k1")
    assert Message.from_fields(fields).payload == {"a": [1]} and json.loads(fields[b"headers"]) == {}


async def test_a_refused_message_holds_back_its_key_only(pool: PgPool, outbox: Outbox) -> None:
    async with pool.connection() as conn, conn.transaction():
        for i in range(6):
            await outbox.add(conn, topic="t", key=f"k{i % 2}", payload=i, event_id=f"e{i}")
    pub = RecordingPublisher(fail=lambda m: m.id == "e2")
    await Relay(outbox, pool, pub).drain()
    assert [m.id for m in pub.sent] == ["e0", "e1", "e3", "e5"]  # e4 waits behind e2
