"""The transactional outbox (PostgreSQL): an event is written in the caller's own
transaction, so it exists if and only if the state change it announces committed.

::

    outbox = Outbox()                      # table edge_kv_outbox (+ edge_kv_outbox_dead)
    await outbox.migrate(pool)             # once, at deploy time (idempotent)

    async with pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO orders ...")
        await outbox.add(conn, topic="orders", key=order_id, payload={"status": "placed"})

What is promised, and why:

* **Atomicity.** :meth:`Outbox.add` is one ``INSERT`` on the caller's connection; it
  commits or rolls back with the caller's transaction. Nothing reaches a broker before
  the commit: the :class:`~.relay.Relay` reads only committed rows.
* **Per-key commit order.** ``add`` first takes a transaction-level advisory lock on
  ``(table, key)``: two transactions writing events of one key are serialised until the
  first one ends, so a higher ``seq`` of a key is always a later commit, and the relay,
  which publishes each key in ``seq`` order, publishes in commit order. An event cannot
  be overtaken by one of its key that committed after it, nor overtake one committed
  before it. The price: transactions that add events of the same key wait for each
  other (the aggregate's row lock usually serialises them already); a transaction that
  adds events of several keys should add them in a consistent (sorted) key order, or
  two such transactions can deadlock (PostgreSQL then aborts one of them).
* **Wake-up.** ``add`` also sends ``NOTIFY`` on :attr:`Outbox.channel` (delivered at
  commit, collapsed per transaction), which wakes the relays; they poll as well, so a
  lost notification only delays.
* **Schema** by :meth:`Outbox.migrate` (``schema.sql`` section ``outbox``), never at import.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from edge_kv.core.errors import InvalidInput
from edge_kv.origin._pg import connection_factory, table_identifier

from . import _schema
from .message import CORRELATION_ID, check_headers, check_text, new_event_id

__all__ = ["DeadLetter", "Outbox", "OutboxStats"]

DEFAULT_TABLE = "edge_kv_outbox"

_ADD = """
WITH serial AS (SELECT pg_advisory_xact_lock(%(lock)s)){notify}
INSERT INTO {table} (id, topic, key, payload, headers)
SELECT %(id)s, %(topic)s, %(key)s, %(payload)s::jsonb, %(headers)s::jsonb FROM serial{notify_from}
RETURNING seq
"""
_STATS = """
SELECT count(*) FILTER (WHERE published_at IS NULL),
       count(*) FILTER (WHERE published_at IS NULL AND attempts > 0),
       extract(epoch FROM now() - min(created) FILTER (WHERE published_at IS NULL)),
       count(*) FILTER (WHERE published_at IS NOT NULL)
  FROM {table}
"""
_DEAD_STATS = "SELECT count(*), extract(epoch FROM now() - min(dead_at)) FROM {dead}"
_CLEANUP = """
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table}
     WHERE published_at IS NOT NULL AND published_at <= now() - %s * interval '1 millisecond'
     LIMIT %s FOR UPDATE SKIP LOCKED))
"""
_DEAD_LIST = """
SELECT seq, id, topic, key, payload, headers, created, attempts, last_error, dead_at
  FROM {dead} ORDER BY seq LIMIT %s
"""
_REQUEUE = """
WITH moved AS (DELETE FROM {dead} WHERE id = %s RETURNING *),
     serial AS (SELECT pg_advisory_xact_lock(%s))
INSERT INTO {table} (id, topic, key, payload, headers, created)
SELECT id, topic, key, payload, headers, created FROM moved, serial
RETURNING seq
"""


def key_lock(table: str, key: str) -> int:
    """The advisory lock (signed int64) that serialises writers of ``key`` in ``table``."""
    digest = hashlib.blake2b(f"edge_kv.outbox\0{table}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Backlog and lag. ``oldest_pending_age_s`` (None when nothing is pending) is the lag
    of the slowest key: how long ago its oldest unpublished event was written."""

    pending: int
    retrying: int
    oldest_pending_age_s: float | None
    published_retained: int
    dead: int
    oldest_dead_age_s: float | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that failed ``max_attempts`` times; ``last_error`` says why."""

    seq: int
    id: str
    topic: str
    key: str
    payload: Any
    headers: Mapping[str, str]
    created: datetime
    attempts: int
    last_error: str | None
    dead_at: datetime


class Outbox:
    """The outbox table ``table`` and its dead-letter table ``dead_table`` (default
    ``<table>_dead``). Holds no connection: :meth:`add` writes through the caller's, the
    other methods take ``db`` (a :class:`~edge_kv.origin._pg.PgPool`, a
    ``psycopg_pool`` pool, a connection or a connection factory)."""

    def __init__(
        self,
        table: str = DEFAULT_TABLE,
        *,
        dead_table: str | None = None,
        notify: bool = True,
        channel: str | None = None,
    ) -> None:
        self.table = table
        self.dead_table = dead_table or f"{table}_dead"
        self.notify = notify
        self.channel = channel or f"{table.split('.')[-1]}_events"[:63]
        t, d = table_identifier(self.table), table_identifier(self.dead_table)
        note = ",\n     note AS (SELECT pg_notify(%(channel)s, ''))" if notify else ""
        self._add = sql.SQL(
            _ADD.format(table="{table}", notify=note, notify_from=", note" if notify else "")
        ).format(table=t)
        self._stats = sql.SQL(_STATS).format(table=t)
        self._dead_stats = sql.SQL(_DEAD_STATS).format(dead=d)
        self._cleanup = sql.SQL(_CLEANUP).format(table=t)
        self._dead_list = sql.SQL(_DEAD_LIST).format(dead=d)
        self._requeue = sql.SQL(_REQUEUE).format(table=t, dead=d)

    def schema_statements(self) -> list[sql.Composed]:
        """The DDL :meth:`migrate` runs (for a migration tool of your own)."""
        return _schema.statements(
            "outbox",
            table=self.table,
            dead=self.dead_table,
            pending_idx=_schema.index_name(self.table, "pending_idx"),
            published_idx=_schema.index_name(self.table, "published_idx"),
        )

    async def migrate(self, db: object) -> None:
        """Create the outbox and dead-letter tables and their indexes if missing."""
        async with connection_factory(db)() as conn:
            await _schema.run(conn, self.schema_statements())

    async def add(
        self,
        conn: psycopg.AsyncConnection[Any],
        *,
        topic: str,
        key: str,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> str:
        """Write one event in ``conn``'s current transaction; returns its id.

        ``payload`` must be JSON-serialisable; ``headers`` map strings to strings (a
        missing ``correlation-id`` is set to the event's id). ``event_id`` (default: a
        random UUID) must be unique in the table: consumers de-duplicate on it. Waits
        while another open transaction holds events of ``key`` (see the module docstring).

        ``InvalidInput`` for bad arguments or an autocommit connection outside a
        transaction block (the event would commit on its own); psycopg errors (a
        duplicate ``event_id``: ``UniqueViolation``) propagate, the caller's transaction
        is then aborted as with any failed statement.
        """
        check_text("topic", topic)
        check_text("key", key)
        eid = check_text("event_id", event_id) if event_id is not None else new_event_id()
        hdrs = check_headers(headers)
        hdrs.setdefault(CORRELATION_ID, eid)
        try:
            body = json.dumps(payload, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"payload is not JSON-serialisable: {exc}") from exc
        if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            raise InvalidInput(
                "Outbox.add needs the caller's transaction: use `async with conn.transaction():` "
                "(on an autocommit connection the event would commit on its own)"
            )
        params = {
            "lock": key_lock(self.table, key),
            "channel": self.channel,
            "id": eid,
            "topic": topic,
            "key": key,
            "payload": body,
            "headers": json.dumps(hdrs, separators=(",", ":")),
        }
        await conn.execute(self._add, params)
        return eid

    async def stats(self, db: object) -> OutboxStats:
        """Counts and ages of pending, retrying, retained-published and dead events."""
        async with connection_factory(db)() as conn:
            cur = await conn.execute(self._stats)
            row = await cur.fetchone()
            cur = await conn.execute(self._dead_stats)
            dead = await cur.fetchone()
            if not conn.autocommit:
                await conn.rollback()
        assert row is not None and dead is not None
        return OutboxStats(
            pending=int(row[0]),
            retrying=int(row[1]),
            oldest_pending_age_s=None if row[2] is None else max(0.0, float(row[2])),
            published_retained=int(row[3]),
            dead=int(dead[0]),
            oldest_dead_age_s=None if dead[1] is None else max(0.0, float(dead[1])),
        )

    async def cleanup(self, db: object, *, retain_s: float = 0.0, batch: int = 1000) -> int:
        """Delete rows published more than ``retain_s`` seconds ago; returns how many."""
        if not retain_s >= 0:
            raise InvalidInput(f"retain_s must be >= 0, got {retain_s!r}")
        total = 0
        connect = connection_factory(db)
        while True:
            async with connect() as conn, conn.transaction():
                n = (await conn.execute(self._cleanup, (int(retain_s * 1000), batch))).rowcount
            total += n
            if n < batch:
                return total

    async def dead_letters(self, db: object, *, limit: int = 100) -> list[DeadLetter]:
        """The dead-lettered events, oldest first."""
        async with connection_factory(db)() as conn:
            cur = await conn.execute(self._dead_list, (limit,))
            rows = await cur.fetchall()
            if not conn.autocommit:
                await conn.rollback()
        return [
            DeadLetter(
                seq=r[0],
                id=r[1],
                topic=r[2],
                key=r[3],
                payload=r[4],
                headers=r[5],
                created=r[6],
                attempts=r[7],
                last_error=r[8],
                dead_at=r[9],
            )
            for r in rows
        ]

    async def requeue_dead(self, db: object, event_id: str) -> bool:
        """Put a dead-lettered event back (same id, attempts reset) behind the pending
        events of its key; False if there is no such dead letter."""
        async with connection_factory(db)() as conn, conn.transaction():
            cur = await conn.execute(
                sql.SQL("SELECT key FROM {dead} WHERE id = %s").format(
                    dead=table_identifier(self.dead_table)
                ),
                (event_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return False
            cur = await conn.execute(self._requeue, (event_id, key_lock(self.table, row[0])))
            return await cur.fetchone() is not None
