"""SIGKILL tests: a relay killed between publishing and marking published, and a
consumer killed mid-batch. In both, the effect (a row per event, written through the
inbox) still happens once per event."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from psycopg import sql

from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import (
    Handler,
    Inbox,
    Message,
    Outbox,
    RedisStreamsPublisher,
    Relay,
    StreamConsumer,
)
from edge_kv.origin.testing import RedisServer

CHILDREN = Path(__file__).with_name("children.py")


async def _effects_table(pool: PgPool, name: str) -> sql.Identifier:
    ident = sql.Identifier(name)
    async with pool.connection() as conn:  # no unique constraint: a second effect would show
        await conn.execute(sql.SQL("CREATE TABLE {} (event_id text NOT NULL)").format(ident))
    return ident


async def _effect_counts(pool: PgPool, ident: sql.Identifier) -> tuple[int, int]:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(sql.SQL("SELECT count(*), count(DISTINCT event_id) FROM {}").format(ident))
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(CHILDREN), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def _kill_after(proc: asyncio.subprocess.Process, lines: int, expect: str) -> list[str]:
    """Read ``lines`` lines starting with ``expect``, then SIGKILL the child."""
    assert proc.stdout is not None and proc.stderr is not None
    got: list[str] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < lines:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"child ended early: {(await proc.stderr.read()).decode()}")
                if line.startswith(expect):
                    got.append(line.strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return got


def _handler(inbox: Inbox, ident: sql.Identifier) -> Handler:
    async def effect(conn: object, message: Message) -> None:
        await conn.execute(sql.SQL("INSERT INTO {} (event_id) VALUES (%s)").format(ident), (message.id,))  # type: ignore[attr-defined]

    return inbox.handler(effect)


@pytest.mark.slow
async def test_relay_killed_after_publishing_publishes_again_and_the_effect_happens_once(
    pg_dsn: str,
    pool: PgPool,
    outbox: Outbox,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    tables: Callable[[str], str],
    stream: str,
) -> None:
    async with pool.connection() as conn, conn.transaction():
        for i in range(30):
            await outbox.add(conn, topic=stream, key=f"k{i % 3}", payload=i)
    proc = await _spawn("relay", pg_dsn, outbox.table, redis_server.url)
    await _kill_after(proc, 1, "published")
    # Killed after its first round (the head of each of the 3 keys) reached Redis.
    assert await redis.xlen(stream) == 3, "the killed relay published"
    assert (await outbox.stats(pool)).pending == 30, "... but did not mark it published"

    assert await Relay(outbox, pool, RedisStreamsPublisher(redis)).drain() == 30
    assert await redis.xlen(stream) == 33  # the first three twice
    assert (await outbox.stats(pool)).pending == 0

    effects = await _effects_table(pool, tables("effects"))
    inbox = Inbox(pool, consumer="group-1", table=tables("inbox"))
    await inbox.migrate()
    consumer = StreamConsumer(redis, stream, "group-1", "c1", _handler(inbox, effects), block_s=0)
    await consumer.ensure_group()
    while await consumer.run_once():
        pass
    assert await _effect_counts(pool, effects) == (30, 30)
    assert (inbox.metrics.processed, inbox.metrics.duplicates) == (30, 3)


@pytest.mark.slow
async def test_consumer_killed_mid_batch_its_messages_are_claimed_and_processed_once(
    pg_dsn: str,
    pool: PgPool,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    tables: Callable[[str], str],
    stream: str,
) -> None:
    pub = RedisStreamsPublisher(redis)
    messages = [Message(id=f"e{i}", topic=stream, key=f"k{i % 4}", payload=i) for i in range(60)]
    assert await pub.publish_many(messages) == [None] * 60
    effects_name, inbox_table = tables("effects"), tables("inbox")
    effects = await _effects_table(pool, effects_name)
    inbox = Inbox(pool, consumer="group-1", table=inbox_table)
    await inbox.migrate()

    proc = await _spawn("consumer", pg_dsn, inbox_table, effects_name, redis_server.url, stream)
    handled = await _kill_after(proc, 5, "handled")  # mid-batch: its batch is 20
    pending = await redis.xpending(stream, "group-1")
    assert pending["pending"] >= 15, "the dead consumer holds un-acknowledged messages"
    assert (await _effect_counts(pool, effects))[0] >= len(handled)

    survivor = StreamConsumer(
        redis,
        stream,
        "group-1",
        "survivor",
        _handler(inbox, effects),
        claim_idle_s=0.3,
        block_s=0.05,
    )
    await asyncio.sleep(0.35)
    while await survivor.run_once():
        pass
    assert survivor.metrics.claimed >= 15
    assert await _effect_counts(pool, effects) == (60, 60)
    assert (await redis.xpending(stream, "group-1"))["pending"] == 0
