"""Idempotency fixtures: a random PostgreSQL schema per session (dropped afterwards), a
fresh table per test, and the three store kinds built on the real Redis and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import psycopg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from edge_kv.origin.idempotency import IdempotencyStore, LayeredStore, PgPool, PostgresStore, RedisStore

STORE_KINDS = ("redis", "postgres", "layered")


@pytest.fixture(scope="session")
def pg_schema(pg_dsn: str) -> Iterator[str]:
    name = f"edge_kv_idem_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
def table(pg_schema: str) -> str:
    return f"{pg_schema}.t_{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[PgPool]:
    async with PgPool(pg_dsn, size=8) as pool:
        yield pool


StoreFactory = Callable[[str], Awaitable[IdempotencyStore]]


@pytest_asyncio.fixture
async def make_store(redis: aioredis.Redis, pg_pool: PgPool, table: str) -> StoreFactory:
    """``await make_store(kind)`` -> a ready store of that kind (schema created)."""

    async def make(kind: str) -> IdempotencyStore:
        if kind == "redis":
            return RedisStore(redis)
        pg = PostgresStore(pg_pool.connection, table=table)
        await pg.create_schema()
        if kind == "postgres":
            return pg
        return LayeredStore(RedisStore(redis, prefix="edge_kv:idem-cache:"), pg)

    return make


@pytest_asyncio.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, make_store: StoreFactory) -> IdempotencyStore:
    return await make_store(request.param)
