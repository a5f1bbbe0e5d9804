"""PostgreSQL plumbing shared by the origin packages (private): the connection-factory
type, :class:`PgPool` (a small asyncio connection pool), table-name quoting and the
``-- section:`` reader of the packages' ``schema.sql`` files.

Every PostgreSQL class of the library takes a *connection factory*: a zero-argument
callable that returns an async context manager yielding a ``psycopg.AsyncConnection``.
``PgPool(dsn).connection`` is one; so is ``psycopg_pool.AsyncConnectionPool(...).connection``.
:func:`connection_factory` turns a pool, a single connection or a factory into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from importlib import resources
from typing import Any, cast

import psycopg
from psycopg import sql

__all__ = ["ConnectionFactory", "PgPool", "connection_factory", "schema_sections", "table_identifier"]

ConnectionFactory = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]


def table_identifier(name: str) -> sql.Identifier:
    """``"schema.table"`` or ``"table"`` as a quoted identifier; ValueError if malformed."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ValueError(f"table name must be 'table' or 'schema.table', got {name!r}")
    return sql.Identifier(*parts)


def schema_sections(package: str, section: str, table: str) -> list[sql.Composed]:
    """The statements of one ``-- section:`` of ``package``'s ``schema.sql``, with
    ``{table}`` and ``{index}`` (``<table>_expiry_idx``) filled in for ``table``."""
    text = resources.files(package).joinpath("schema.sql").read_text("utf-8")
    chunks = text.split("-- section: ")
    body = next((c.split("\n", 1)[1] for c in chunks[1:] if c.split("\n", 1)[0].strip() == section), None)
    if body is None:
        raise ValueError(f"schema.sql of {package} has no section {section!r}")
    lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
    index = sql.Identifier(table.split(".")[-1] + "_expiry_idx")
    out = []
    for stmt in "\n".join(lines).split(";"):
        if stmt.strip():
            out.append(sql.SQL(stmt.strip()).format(table=table_identifier(table), index=index))
    return out


_SINGLE: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], ConnectionFactory] = (
    weakref.WeakKeyDictionary()
)


def connection_factory(db: object) -> ConnectionFactory:
    """A connection factory for ``db``: a :class:`PgPool` or ``psycopg_pool``
    ``AsyncConnectionPool`` (anything with a ``connection()`` method), a single
    ``psycopg.AsyncConnection`` (lent to one caller at a time), or already a factory.
    ``TypeError`` for anything else."""
    if isinstance(db, psycopg.AsyncConnection):
        factory = _SINGLE.get(db)
        if factory is None:
            factory = _SINGLE[db] = _single_connection(db)
        return factory
    method = getattr(db, "connection", None)
    if callable(method):
        return cast(ConnectionFactory, method)
    if callable(db):
        return cast(ConnectionFactory, db)
    raise TypeError(
        f"expected a psycopg AsyncConnection, a connection pool or a connection factory, got {type(db).__name__}"
    )


def _single_connection(conn: psycopg.AsyncConnection[Any]) -> ConnectionFactory:
    lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def lend() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        # One borrower at a time: the stores run multi-statement transactions on it.
        async with lock:
            yield conn

    return lend


class PgPool:
    """A minimal fixed-size pool of autocommit ``AsyncConnection``s (stdlib + psycopg only).

    Connections are opened lazily up to ``size``; a broken one is discarded, one left in a
    transaction is rolled back before reuse. Use ``psycopg_pool`` in production if you
    already have it; this exists so the library needs nothing beyond ``psycopg``.
    """

    def __init__(self, dsn: str, *, size: int = 10, connect_timeout_s: float = 10.0) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.dsn = dsn
        self.size = size
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._sem = asyncio.Semaphore(size)
        self._all: set[psycopg.AsyncConnection[Any]] = set()
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._closed:
            raise RuntimeError("pool is closed")
        async with self._sem:
            conn = self._idle.pop() if self._idle else None
            if conn is not None and conn.closed:
                self._all.discard(conn)
                conn = None
            if conn is None:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s))
                )
                self._all.add(conn)
            try:
                yield conn
            finally:
                reusable = not conn.closed and not conn.broken
                if reusable and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    try:
                        await conn.rollback()
                    except psycopg.Error:
                        reusable = False
                if reusable and not self._closed:
                    self._idle.append(conn)
                else:
                    self._all.discard(conn)
                    await conn.close()

    async def close(self) -> None:
        self._closed = True
        conns, self._all, self._idle = list(self._all), set(), []
        for conn in conns:
            await conn.close()

    async def __aenter__(self) -> PgPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
