"""PostgreSQL durability: the layered store survives losing Redis; cleanup; bad DSN."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import psycopg
import pytest
import redis.asyncio as aioredis

from edge_kv.origin.idempotency import (
    IdempotencyService,
    LayeredStore,
    PgPool,
    PostgresStore,
    RedisStore,
    StoredResponse,
    StoreUnavailable,
)
from edge_kv.origin.testing import RedisServer


def responder(body: bytes, calls: list[bytes]) -> Callable[[], Awaitable[StoredResponse]]:
    async def handler() -> StoredResponse:
        calls.append(body)
        return StoredResponse(201, (("content-type", "text/plain"),), body)

    return handler


async def test_layered_survives_flushall(redis: aioredis.Redis, pg_pool: PgPool, table: str) -> None:
    pg = PostgresStore(pg_pool.connection, table=table)
    await pg.create_schema()
    svc = IdempotencyService(LayeredStore(RedisStore(redis, prefix="c:"), pg))
    calls: list[bytes] = []
    for i in range(50):
        await svc.execute(f"k{i}", f"fp{i}", responder(f"r{i}".encode(), calls))
    assert len(calls) == 50
    assert len(await redis.keys("c:*")) == 50  # cached
    await redis.flushall()
    for i in range(50):
        out = await svc.execute(f"k{i}", f"fp{i}", responder(b"again", calls))
        assert out.replayed and out.response.body == f"r{i}".encode()
    assert len(calls) == 50
    assert len(await redis.keys("c:*")) == 50  # refilled from PostgreSQL


async def test_layered_works_with_redis_down(
    redis_servers: Callable[[int], list[RedisServer]], pg_pool: PgPool, table: str
) -> None:
    (server,) = redis_servers(1)
    client = aioredis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        pg = PostgresStore(pg_pool.connection, table=table)
        await pg.create_schema()
        svc = IdempotencyService(LayeredStore(RedisStore(client), pg))
        calls: list[bytes] = []
        await svc.execute("a", "fp", responder(b"one", calls))
        server.kill()
        out = await svc.execute("a", "fp", responder(b"two", calls))
        assert out.replayed and out.response.body == b"one"
        fresh = await svc.execute("b", "fp", responder(b"three", calls))
        assert fresh.stored and not fresh.replayed
        assert (await svc.execute("b", "fp", responder(b"four", calls))).replayed
        assert calls == [b"one", b"three"]
        # Redis alone, on the same dead server, fails closed.
        with pytest.raises(StoreUnavailable):
            await IdempotencyService(RedisStore(client)).execute("c", "fp", responder(b"x", calls))
    finally:
        await client.aclose()


async def test_cleanup_removes_expired_rows_only(pg_pool: PgPool, table: str) -> None:
    pg = PostgresStore(pg_pool.connection, table=table)
    await pg.create_schema()
    await pg.create_schema()  # idempotent
    resp = StoredResponse(200, (), b"x")
    for i in range(5):  # done, expiring soon
        assert (await pg.begin(f"short{i}", "fp", "t", 60_000)).acquired
        assert await pg.complete(f"short{i}", "t", resp, 100)
    for i in range(3):  # in flight, lease expiring soon (a crashed request)
        assert (await pg.begin(f"crashed{i}", "fp", "t", 100)).acquired
    for i in range(4):  # done, long TTL
        assert (await pg.begin(f"long{i}", "fp", "t", 60_000)).acquired
        assert await pg.complete(f"long{i}", "t", resp, 3_600_000)
    assert (await pg.begin("running", "fp", "t", 60_000)).acquired  # in flight, live
    await asyncio.sleep(0.25)
    assert await pg.cleanup(batch=2) == 8  # several batches
    assert await pg.cleanup() == 0
    async with pg_pool.connection() as conn:
        schema, name = table.split(".")
        rows = await (
            await conn.execute(
                psycopg.sql.SQL("SELECT key, state FROM {} ORDER BY key").format(
                    psycopg.sql.Identifier(schema, name)
                )
            )
        ).fetchall()
    assert rows == [
        ("long0", "done"),
        ("long1", "done"),
        ("long2", "done"),
        ("long3", "done"),
        ("running", "in_flight"),
    ]
    assert (await pg.get("long2")) is not None


async def test_postgres_unreachable_is_store_unavailable(table: str) -> None:
    async with PgPool("postgresql://postgres@127.0.0.1:1/none", size=1, connect_timeout_s=1) as pool:
        svc = IdempotencyService(PostgresStore(pool.connection, table=table))

        async def never() -> StoredResponse:
            raise AssertionError("must not run without the check")

        with pytest.raises(StoreUnavailable):
            await svc.execute("k", "fp", never)


def test_bad_table_names() -> None:
    async def factory() -> None:  # never called
        raise AssertionError

    for name in ("", "a.b.c", ".x", "x."):
        with pytest.raises(ValueError):
            PostgresStore(factory, table=name)  # type: ignore[arg-type]


def test_redis_store_refuses_decoded_clients(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(aioredis.Redis.from_url(redis_server.url, decode_responses=True))


async def test_cleanup_command(pg_pool: PgPool, table: str, pg_dsn: str) -> None:
    pg = PostgresStore(pg_pool.connection, table=table)
    await pg.create_schema()
    assert (await pg.begin("gone", "fp", "t", 50)).acquired
    assert (await pg.begin("kept", "fp", "t", 60_000)).acquired
    await asyncio.sleep(0.1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_kv.origin.idempotency.cleanup",
        "--dsn",
        pg_dsn,
        "--table",
        table,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == f"{table}: 1 expired rows deleted"
    assert not (await pg.begin("kept", "fp", "t2", 60_000)).acquired
    assert (await pg.begin("gone", "fp", "t2", 60_000)).acquired


async def test_pool_recovers_from_killed_connections(pg_pool: PgPool, table: str, pg_dsn: str) -> None:
    pg = PostgresStore(pg_pool.connection, table=table)
    await pg.create_schema()
    assert (await pg.begin("a", "fp", "t", 60_000)).acquired
    async with pg_pool.connection() as conn:
        pid = conn.info.backend_pid
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await asyncio.sleep(0.05)
    # The dead idle connection fails one call (typed), is dropped, and the next call works.
    try:
        rec = await pg.get("a")
    except StoreUnavailable:
        rec = await pg.get("a")
    assert rec is not None and not rec.done
    async with pg_pool.connection() as conn:
        assert conn.info.backend_pid != pid
