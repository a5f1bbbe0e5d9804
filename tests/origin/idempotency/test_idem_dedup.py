"""Consumer de-duplication: Redis and PostgreSQL ``seen``, and the exactly-once-effect
helper whose record commits or rolls back with the handler's own writes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from psycopg import sql

from edge_kv.origin.idempotency import PgPool, PostgresDeduplicator, RedisDeduplicator


async def test_redis_seen_marks_once(redis: aioredis.Redis) -> None:
    d = RedisDeduplicator(redis, ttl_s=0.2)
    assert await d.seen("m1") is False
    assert await d.seen("m1") is True
    assert await RedisDeduplicator(redis, consumer="other").seen("m1") is False  # per consumer
    await asyncio.sleep(0.3)
    assert await d.seen("m1") is False  # TTL passed


async def test_redis_duplicate_deliveries_processed_once(redis: aioredis.Redis) -> None:
    d = RedisDeduplicator(redis)
    processed: list[str] = []

    async def consume(mid: str) -> bool:
        async def work() -> None:
            await asyncio.sleep(0.01)
            processed.append(mid)

        return await d.handle(mid, work)

    deliveries = [f"msg-{i % 10}" for i in range(100)]  # every message delivered 10 times
    results = await asyncio.gather(*(consume(m) for m in deliveries))
    assert sorted(processed) == sorted(f"msg-{i}" for i in range(10))
    assert sum(results) == 10


async def test_redis_failed_handler_is_forgotten(redis: aioredis.Redis) -> None:
    d = RedisDeduplicator(redis)

    async def fail() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await d.handle("m", fail)
    ran: list[int] = []

    async def ok() -> None:
        ran.append(1)

    assert await d.handle("m", ok) is True and ran == [1]
    assert await d.handle("m", ok) is False and ran == [1]


@pytest.mark.parametrize("bad", ["", "x" * 513, 5, None, "nul\x00"])
async def test_bad_message_ids(redis: aioredis.Redis, bad: object) -> None:
    with pytest.raises(ValueError):
        await RedisDeduplicator(redis).seen(bad)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def ledger(
    pg_pool: PgPool, pg_schema: str
) -> AsyncIterator[tuple[PostgresDeduplicator, sql.Identifier]]:
    """A de-duplicator plus an ``effects`` table the handlers write to."""
    suffix = uuid.uuid4().hex[:10]
    d = PostgresDeduplicator(pg_pool.connection, table=f"{pg_schema}.msgs_{suffix}", consumer="billing")
    await d.create_schema()
    await d.create_schema()
    effects = sql.Identifier(pg_schema, f"effects_{suffix}")
    async with pg_pool.connection() as conn:
        await conn.execute(sql.SQL("CREATE TABLE {} (message_id text, amount int)").format(effects))
    yield d, effects


async def count(pool: PgPool, table: sql.Identifier) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table))).fetchone()
    assert row is not None
    return int(row[0])


async def test_exactly_once_effect_under_duplicate_deliveries(
    ledger: tuple[PostgresDeduplicator, sql.Identifier], pg_pool: PgPool
) -> None:
    d, effects = ledger

    def handler_for(mid: str) -> Any:
        async def handler(conn: psycopg.AsyncConnection[Any]) -> str:
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, 1)").format(effects), (mid,))
            await asyncio.sleep(0.02)  # hold the transaction open: duplicates must wait, not run
            return mid

        return handler

    deliveries = [f"evt-{i % 5}" for i in range(40)]
    results = await asyncio.gather(*(d.process_once(m, handler_for(m)) for m in deliveries))
    assert sum(not r.duplicate for r in results) == 5
    assert {r.result for r in results if not r.duplicate} == {f"evt-{i}" for i in range(5)}
    assert await count(pg_pool, effects) == 5


async def test_failure_rolls_back_effect_and_record_then_redelivery_succeeds(
    ledger: tuple[PostgresDeduplicator, sql.Identifier], pg_pool: PgPool
) -> None:
    d, effects = ledger

    async def failing(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL("INSERT INTO {} VALUES ('e1', 10)").format(effects))
        raise RuntimeError("downstream said no")

    with pytest.raises(RuntimeError, match="downstream"):
        await d.process_once("e1", failing)
    assert await count(pg_pool, effects) == 0
    assert await d.seen("probe") is False  # the table itself works
    async with pg_pool.connection() as conn:
        assert (
            await (
                await conn.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE message_id = 'e1'").format(
                        sql.Identifier(*d.table.split("."))
                    )
                )
            ).fetchone()
            is None
        )

    async def succeeding(conn: psycopg.AsyncConnection[Any]) -> int:
        await conn.execute(sql.SQL("INSERT INTO {} VALUES ('e1', 10)").format(effects))
        return 10

    first = await d.process_once("e1", succeeding)
    assert not first.duplicate and first.result == 10
    again = await d.process_once("e1", succeeding)
    assert again.duplicate and again.result is None
    assert await count(pg_pool, effects) == 1


async def test_pg_seen_ttl_and_cleanup(
    ledger: tuple[PostgresDeduplicator, sql.Identifier], pg_pool: PgPool
) -> None:
    d, _ = ledger
    short = PostgresDeduplicator(pg_pool.connection, table=d.table, consumer="billing", ttl_s=0.2)
    assert await short.seen("a") is False
    assert await short.seen("a") is True
    await asyncio.sleep(0.3)
    assert await short.seen("b") is False  # fresh
    # "a" is past the TTL: counts as new again, and cleanup would remove only it.
    assert await short.cleanup() == 1
    assert await short.seen("b") is True
    assert await short.seen("a") is False
    await short.forget("a")
    assert await short.seen("a") is False
