"""Idempotency records in PostgreSQL: durable and authoritative.

One row per scoped key (``schema.sql`` section ``idempotency_keys``); the primary key is
the unique constraint that makes ``begin`` an atomic claim: an ``INSERT .. ON CONFLICT DO
UPDATE .. WHERE expires_at <= now()`` either creates the in-flight row, takes over an
expired one, or changes nothing (then the live row is read back). Deadlines use the
database clock (``now()``), so application hosts may disagree about time.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from edge_kv.origin._pg import ConnectionFactory, table_identifier

from .model import BeginResult, Record, StoredResponse, StoreUnavailable
from .schema import schema_statements

_SELECT = """
SELECT fingerprint, state, status, headers, body,
       GREATEST(0, (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::bigint)
FROM {table} WHERE key = %s AND expires_at > now()
"""

_CLAIM = """
INSERT INTO {table} AS t (key, fingerprint, state, token, expires_at)
VALUES (%s, %s, 'in_flight', %s, now() + %s * interval '1 millisecond')
ON CONFLICT (key) DO UPDATE
   SET fingerprint = EXCLUDED.fingerprint, state = 'in_flight', token = EXCLUDED.token,
       status = NULL, headers = NULL, body = NULL, created_at = now(), expires_at = EXCLUDED.expires_at
 WHERE t.expires_at <= now()
RETURNING 1
"""

_COMPLETE = """
UPDATE {table}
   SET state = 'done', token = NULL, status = %s, headers = %s, body = %s,
       expires_at = now() + %s * interval '1 millisecond'
 WHERE key = %s AND token = %s AND state = 'in_flight'
RETURNING fingerprint
"""

_RELEASE = "DELETE FROM {table} WHERE key = %s AND token = %s AND state = 'in_flight'"

_EXTEND = """
UPDATE {table} SET expires_at = now() + %s * interval '1 millisecond'
 WHERE key = %s AND token = %s AND state = 'in_flight'
"""

_CLEANUP = """
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE expires_at <= now() LIMIT %s FOR UPDATE SKIP LOCKED))
"""


def _tx(conn: psycopg.AsyncConnection[Any]) -> AbstractAsyncContextManager[Any]:
    """A transaction block, skipped on autocommit connections where each of our statements
    is atomic on its own (saves the BEGIN/COMMIT round trips)."""
    return contextlib.nullcontext() if conn.autocommit else conn.transaction()


def _record(row: tuple[Any, ...]) -> Record:
    fp, state, status, headers, body, remaining = row
    response = None
    if state == "done":
        response = StoredResponse(
            status=int(status),
            headers=tuple((str(k), str(v)) for k, v in (headers or [])),
            body=bytes(body or b""),
        )
    return Record(fingerprint=fp, response=response, expires_in_ms=int(remaining))


class PostgresStore:
    """:class:`~.model.IdempotencyStore` on PostgreSQL. ``connect`` is a connection
    factory (see :mod:`edge_kv.origin._pg`); ``table`` may be schema-qualified."""

    def __init__(self, connect: ConnectionFactory, *, table: str = "edge_kv_idempotency_keys") -> None:
        self.connect = connect
        self.table = table
        t = table_identifier(table)
        self._select = sql.SQL(_SELECT).format(table=t)
        self._claim = sql.SQL(_CLAIM).format(table=t)
        self._complete = sql.SQL(_COMPLETE).format(table=t)
        self._release = sql.SQL(_RELEASE).format(table=t)
        self._extend = sql.SQL(_EXTEND).format(table=t)
        self._cleanup = sql.SQL(_CLEANUP).format(table=t)

    async def create_schema(self) -> None:
        """Create the table and its expiry index if missing (safe to run repeatedly)."""
        try:
            async with self.connect() as conn, conn.transaction():
                for stmt in schema_statements("idempotency_keys", self.table):
                    await conn.execute(stmt)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc

    async def begin(self, key: str, fingerprint: str, token: str, lease_ms: int) -> BeginResult:
        try:
            async with self.connect() as conn:
                # Bounded: each lap either reads a live row, claims, or saw the row vanish
                # between the two statements (released or expired) and tries again.
                for _ in range(20):
                    async with _tx(conn):
                        row = await (await conn.execute(self._select, (key,))).fetchone()
                        if row is not None:
                            return BeginResult(acquired=False, record=_record(row))
                        cur = await conn.execute(self._claim, (key, fingerprint, token, lease_ms))
                        if await cur.fetchone() is not None:
                            return BeginResult(acquired=True)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc
        raise StoreUnavailable(f"postgres: key {key!r} kept changing under begin()")

    async def get(self, key: str) -> Record | None:
        try:
            async with self.connect() as conn, _tx(conn):
                row = await (await conn.execute(self._select, (key,))).fetchone()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc
        return _record(row) if row is not None else None

    async def complete(self, key: str, token: str, response: StoredResponse, ttl_ms: int) -> bool:
        return await self.complete_record(key, token, response, ttl_ms) is not None

    async def complete_record(
        self, key: str, token: str, response: StoredResponse, ttl_ms: int
    ) -> Record | None:
        """:meth:`complete`, returning the done record written (None if the mark was not ours)."""
        headers = Jsonb([[k, v] for k, v in response.headers])
        args = (response.status, headers, response.body, ttl_ms, key, token)
        try:
            async with self.connect() as conn, _tx(conn):
                row = await (await conn.execute(self._complete, args)).fetchone()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc
        return None if row is None else Record(fingerprint=row[0], response=response, expires_in_ms=ttl_ms)

    async def release(self, key: str, token: str) -> bool:
        return await self._rowcount(self._release, (key, token)) == 1

    async def extend(self, key: str, token: str, lease_ms: int) -> bool:
        return await self._rowcount(self._extend, (lease_ms, key, token)) == 1

    async def cleanup(self, *, batch: int = 1000) -> int:
        """Delete expired rows (done past their TTL, in-flight past their lease), in
        batches of ``batch`` so a large backlog never holds long locks. Returns the count."""
        total = 0
        while True:
            n = await self._rowcount(self._cleanup, (batch,))
            total += n
            if n < batch:
                return total

    async def _rowcount(self, query: sql.Composed, args: tuple[Any, ...]) -> int:
        try:
            async with self.connect() as conn, _tx(conn):
                cur = await conn.execute(query, args)
                return cur.rowcount
        except psycopg.Error as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc
