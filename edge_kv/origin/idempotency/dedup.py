"""Consumer de-duplication for at-least-once delivery.

* :class:`RedisDeduplicator` - ``seen(message_id)`` is one ``SET NX PX``: True if the id
  was already recorded within the TTL. ``handle(message_id, handler)`` records, runs and,
  if the handler fails, forgets the id so the redelivery is processed. Cheap, but the
  record and the handler's effect are not atomic (a crash after the effect and before
  the ack means the redelivery is skipped, which is what you want; a crash between
  ``seen`` and the effect loses the message until the TTL passes).
* :class:`PostgresDeduplicator` - the same ``seen``, durable; and ``process_once`` which
  records the message id *in the same transaction* as the handler's writes: the effect
  and the record commit together or not at all (exactly-once effect).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
import redis.asyncio as aioredis
from psycopg import sql

from edge_kv.core.validate import check_key
from edge_kv.origin import _redis
from edge_kv.origin._pg import ConnectionFactory, table_identifier

from .model import StoreUnavailable
from .schema import schema_statements

T = TypeVar("T")

MAX_MESSAGE_ID_BYTES = 512


def check_message_id(message_id: object) -> str:
    """Message ids are non-empty strings of at most 512 UTF-8 bytes, without NUL."""
    mid = check_key(message_id, max_length=MAX_MESSAGE_ID_BYTES)
    if "\x00" in mid:
        raise ValueError("message id must not contain NUL")
    return mid


def _ttl_ms(ttl_s: float) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not ttl_s > 0:
        raise ValueError(f"ttl_s must be a number > 0, got {ttl_s!r}")
    return max(1, int(ttl_s * 1000))


class RedisDeduplicator:
    """``seen``/``forget``/``handle`` on a ``redis.asyncio.Redis`` or ``RedisCluster``
    client (one key per message id). Every call is bounded by ``timeout`` seconds and a
    refused connection fails at once; both, like any Redis error, raise
    :class:`~.model.StoreUnavailable`."""

    def __init__(
        self,
        redis: Any,
        *,
        consumer: str = "default",
        ttl_s: float = 86400,
        prefix: str = "edge_kv:dedup:",
        timeout: float = 1.0,
    ) -> None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < float("inf")
        ):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self.redis = _redis.prepare(redis)
        self.ttl_ms = _ttl_ms(ttl_s)
        self.prefix = f"{prefix}{len(consumer)}:{consumer}:"
        self.timeout = float(timeout)

    async def _call(self, aw: Awaitable[T], what: str) -> T:
        try:
            return await _redis.bounded(aw, self.timeout, what, StoreUnavailable)
        except aioredis.RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def seen(self, message_id: str) -> bool:
        """Record ``message_id``; True if it was already recorded (a duplicate)."""
        key = self.prefix + check_message_id(message_id)
        created = await self._call(self.redis.set(key, b"1", nx=True, px=self.ttl_ms), "dedup seen")
        return not created

    async def forget(self, message_id: str) -> None:
        key = self.prefix + check_message_id(message_id)
        await self._call(self.redis.delete(key), "dedup forget")

    async def handle(self, message_id: str, handler: Callable[[], Awaitable[Any]]) -> bool:
        """Run ``handler`` unless ``message_id`` was seen; False if skipped. A failing
        handler's id is forgotten (so the redelivery runs) and the exception propagates."""
        if await self.seen(message_id):
            return False
        try:
            await handler()
        except BaseException:
            await self.forget(message_id)
            raise
        return True


@dataclass(frozen=True, slots=True)
class Processed(Generic[T]):
    """``duplicate``: the id was already recorded and the handler did not run."""

    duplicate: bool
    result: T | None = None


_SEEN = """
INSERT INTO {table} AS t (consumer, message_id) VALUES (%s, %s)
ON CONFLICT (consumer, message_id) DO UPDATE SET processed_at = now()
 WHERE t.processed_at <= now() - %s * interval '1 millisecond'
RETURNING 1
"""
_FORGET = "DELETE FROM {table} WHERE consumer = %s AND message_id = %s"
_CLEANUP = """
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE processed_at <= now() - %s * interval '1 millisecond'
     LIMIT %s FOR UPDATE SKIP LOCKED))
"""


class PostgresDeduplicator:
    """Processed-message records in PostgreSQL (``schema.sql`` section ``processed_messages``).
    A record older than ``ttl_s`` no longer counts and is removed by :meth:`cleanup`."""

    def __init__(
        self,
        connect: ConnectionFactory,
        *,
        consumer: str = "default",
        ttl_s: float = 7 * 86400,
        table: str = "edge_kv_processed_messages",
    ) -> None:
        self.connect = connect
        self.consumer = check_key(consumer)
        self.ttl_ms = _ttl_ms(ttl_s)
        self.table = table
        t = table_identifier(table)
        self._seen = sql.SQL(_SEEN).format(table=t)
        self._forget = sql.SQL(_FORGET).format(table=t)
        self._cleanup = sql.SQL(_CLEANUP).format(table=t)

    async def create_schema(self) -> None:
        try:
            async with self.connect() as conn, conn.transaction():
                for stmt in schema_statements("processed_messages", self.table):
                    await conn.execute(stmt)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc

    async def seen(self, message_id: str) -> bool:
        """Record ``message_id``; True if it was already recorded within the TTL."""
        mid = check_message_id(message_id)
        try:
            async with self.connect() as conn, conn.transaction():
                cur = await conn.execute(self._seen, (self.consumer, mid, self.ttl_ms))
                return await cur.fetchone() is None
        except psycopg.Error as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc

    async def forget(self, message_id: str) -> None:
        mid = check_message_id(message_id)
        try:
            async with self.connect() as conn, conn.transaction():
                await conn.execute(self._forget, (self.consumer, mid))
        except psycopg.Error as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc

    async def process_once(
        self, message_id: str, handler: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> Processed[T]:
        """Exactly-once effect: record ``message_id`` and run ``handler(conn)`` in one
        transaction. The handler must do its writes through ``conn``. If it raises, both
        its writes and the record roll back and the exception propagates (the redelivery
        will run it again). A concurrent duplicate waits on the record's row lock and then
        sees it (committed: skipped) or not (rolled back: it runs).

        Errors (the handler's, or psycopg's if the database is unreachable) propagate
        unchanged: the caller must not ack the message then."""
        mid = check_message_id(message_id)
        async with self.connect() as conn, conn.transaction():
            cur = await conn.execute(self._seen, (self.consumer, mid, self.ttl_ms))
            if await cur.fetchone() is None:
                return Processed(duplicate=True)
            result = await handler(conn)
        return Processed(duplicate=False, result=result)

    async def cleanup(self, *, batch: int = 1000) -> int:
        """Delete records older than the TTL; returns how many."""
        total = 0
        while True:
            try:
                async with self.connect() as conn, conn.transaction():
                    n = (await conn.execute(self._cleanup, (self.ttl_ms, batch))).rowcount
            except psycopg.Error as exc:
                raise StoreUnavailable(f"postgres: {exc}") from exc
            total += n
            if n < batch:
                return total
