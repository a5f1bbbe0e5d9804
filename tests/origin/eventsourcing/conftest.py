"""Event-sourcing fixtures: a random PostgreSQL schema per session (dropped afterwards), a
fresh event store (its own tables) per test, and a pool sized for the concurrency tests."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from edge_kv.origin.eventsourcing import EventStore, PgPool


@pytest.fixture(scope="session")
def es_schema(pg_dsn: str) -> Iterator[str]:
    name = f"edge_kv_es_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def table(es_schema: str) -> str:
    """A unique events-table name in the session schema."""
    return f"{es_schema}.ev_{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def pool(pg_dsn: str) -> AsyncIterator[PgPool]:
    async with PgPool(pg_dsn, size=8) as p:
        yield p


@pytest_asyncio.fixture
async def store(pool: PgPool, table: str) -> EventStore:
    s = EventStore(pool, table=table)
    await s.migrate()
    return s


def qualified(store: EventStore, suffix: str) -> str:
    """A table name next to the store's tables (same schema), e.g. a read model."""
    return f"{store.table}_{suffix}"


async def bulk_append(store: EventStore, rows: list[tuple[str, int, str, dict[str, Any]]]) -> int:
    """Test setup only: COPY ``(stream, version, type, data)`` rows in as the next
    positions and move the position counter (far faster than appends). Returns the head."""
    names = store.names
    async with store.connect() as conn, conn.transaction():
        cur = await conn.execute(
            sql.SQL("SELECT position FROM {} FOR UPDATE").format(sql.Identifier(*names.positions.split(".")))
        )
        row = await cur.fetchone()
        assert row is not None
        head = int(row[0])
        buf = io.StringIO()
        for i, (stream, version, type_, data) in enumerate(rows, head + 1):
            buf.write(f"{i}\t{stream}\t{version}\t{uuid.uuid4()}\t{type_}\t{json.dumps(data)}\n")
        copy_sql = sql.SQL("COPY {} (position, stream, version, event_id, type, data) FROM STDIN").format(
            sql.Identifier(*names.events.split("."))
        )
        async with conn.cursor() as c, c.copy(copy_sql) as copy:
            await copy.write(buf.getvalue())
        head += len(rows)
        await conn.execute(
            sql.SQL("UPDATE {} SET position = %s").format(sql.Identifier(*names.positions.split("."))),
            (head,),
        )
    return head
