"""Fixtures for the messaging tests: a PgPool on the test database, an outbox with
tables of its own (dropped afterwards), a stream name per test, and NATS JetStream at
127.0.0.1:4222 (EDGE_KV_NATS_URL) - unreachable NATS fails the NATS tests, it does not
skip them."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import Outbox

NATS_URL = os.environ.get("EDGE_KV_NATS_URL", "nats://127.0.0.1:4222")


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


@pytest_asyncio.fixture
async def pool(pg_dsn: str) -> AsyncIterator[PgPool]:
    async with PgPool(pg_dsn, size=8) as p:
        yield p


@pytest_asyncio.fixture
async def tables(pg_dsn: str) -> AsyncIterator[Callable[[str], str]]:
    """``tables("outbox")`` -> a fresh table name; every table so named (and its
    ``_dead`` companion) is dropped after the test."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = unique(f"msg_{prefix}")
        made.append(name)
        return name

    yield make
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        for name in made:
            for t in (name, f"{name}_dead"):
                await conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(t)))


@pytest_asyncio.fixture
async def outbox(pool: PgPool, tables: Callable[[str], str]) -> Outbox:
    box = Outbox(tables("outbox"))
    await box.migrate(pool)
    return box


@pytest.fixture
def stream() -> str:
    return unique("stream")
