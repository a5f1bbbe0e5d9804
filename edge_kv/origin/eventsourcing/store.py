"""The PostgreSQL event store: append with an expected version, read a stream, read all
by global position, snapshots.

What it promises, and why:

* **Optimistic concurrency by constraint.** An append inserts versions ``expected+1 ..
  expected+n`` of the stream; the unique constraint on ``(stream, version)`` refuses a
  second writer of the same version (PostgreSQL's unique index check waits for the
  in-flight inserter, then fails), and the append inserts only if version ``expected``
  exists (events are never deleted, so that check cannot be invalidated later), so a
  stream never has a hole or a duplicate. The refusal is :class:`~.errors.ConcurrencyError`
  with both versions; nothing of the refused append is written.
* **Gap-free global position in commit order.** Positions come from a one-row counter
  table that the append updates in the same statement as the insert; the row lock is held
  until the append's transaction ends, so appends take positions one transaction at a time
  and commit in position order, and a rolled-back append gives its positions back. A
  reader that has seen position *p* has therefore seen every position below *p*, and
  will never see a new one below it: ``WHERE position > checkpoint`` cannot skip an
  event. The price is that appends (position assignment to commit) are serialised
  database-wide; see docs/event-sourcing.md for the numbers and the alternative
  (transaction ids + snapshot xmin) we did not take.
* **Atomic side writes.** ``in_transaction`` runs in the append's transaction after the
  insert (an outbox ``add``, a read model updated synchronously); if it raises, nothing is
  written. ``conn=`` runs the append inside the caller's own transaction instead (several
  streams atomically, in one database).

An append without a hook on an autocommit connection is one statement (one round trip).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.types.json import Jsonb

from edge_kv.origin._pg import ConnectionFactory, connection_factory, table_identifier

from ._schema import StoreNames, schema_statements
from .errors import ConcurrencyError, EventStoreUnavailable
from .events import NewEvent, RecordedEvent, Snapshot

__all__ = ["EventStore", "InTransaction"]

InTransaction = Callable[[psycopg.AsyncConnection[Any], Sequence[RecordedEvent]], Awaitable[None]]
"""``async def hook(conn, recorded)``: runs inside the append's transaction, after the
events are inserted (``recorded`` carries their positions). Raise to roll the append back."""

COLUMNS = (
    "position, stream, version, type, data, schema_version, event_id::text, "
    "correlation_id, causation_id, metadata, recorded_at"
)
"""The select list that :class:`RecordedEvent` is built from, in its field order."""

_APPEND = """
WITH pos AS (
    UPDATE {positions} SET position = position + %(n)s
     WHERE %(expected)s::bigint = 0
        OR EXISTS (SELECT 1 FROM {events} WHERE stream = %(stream)s AND version = %(expected)s::bigint)
    RETURNING position - %(n)s AS base
)
INSERT INTO {events}
    (position, stream, version, event_id, type, schema_version, data, metadata,
     correlation_id, causation_id)
SELECT pos.base + e.ord, %(stream)s, %(expected)s::bigint + e.ord, (e.doc->>'i')::uuid,
       e.doc->>'t', (e.doc->>'s')::integer, e.doc->'d', e.doc->'m', e.doc->>'c', e.doc->>'k'
  FROM pos, jsonb_array_elements(%(docs)s::jsonb) WITH ORDINALITY AS e(doc, ord)
RETURNING position, recorded_at
"""

_VERSION = "SELECT coalesce(max(version), 0) FROM {events} WHERE stream = %s"
_READ_STREAM = (
    "SELECT "
    + COLUMNS
    + " FROM {events} WHERE stream = %s AND version >= %s AND version <= %s ORDER BY version"
)
_READ_ALL = "SELECT " + COLUMNS + " FROM {events} WHERE position > %s ORDER BY position LIMIT %s"
_HEAD = "SELECT position FROM {positions}"
_SAVE_SNAPSHOT = """
INSERT INTO {snapshots} AS s (stream, version, schema_version, state) VALUES (%s, %s, %s, %s)
ON CONFLICT (stream) DO UPDATE
   SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
       state = EXCLUDED.state, taken_at = now()
 WHERE s.version < EXCLUDED.version OR s.schema_version <> EXCLUDED.schema_version
"""
_LOAD_SNAPSHOT = "SELECT stream, version, schema_version, state FROM {snapshots} WHERE stream = %s"

_MAX_VERSION = 2**62


class _HookState:
    failed = False


class EventStore:
    """Events in PostgreSQL. ``db`` is a connection factory, a pool (``PgPool``,
    ``psycopg_pool.AsyncConnectionPool``) or one ``AsyncConnection`` (see
    :func:`edge_kv.origin._pg.connection_factory`). ``table`` names the events table
    (``"table"`` or ``"schema.table"``); the store's other tables are named after it
    (:class:`~._schema.StoreNames`). ``channel`` is the NOTIFY channel (default derived
    from the table name). Call :meth:`migrate` once before use."""

    def __init__(self, db: object, *, table: str = "edge_kv_events", channel: str | None = None) -> None:
        self.connect: ConnectionFactory = connection_factory(db)
        self.names = StoreNames.for_table(table, channel)
        n = self.names

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(
                events=table_identifier(n.events),
                positions=table_identifier(n.positions),
                snapshots=table_identifier(n.snapshots),
            )

        self._append = q(_APPEND)
        self._version = q(_VERSION)
        self._read_stream = q(_READ_STREAM)
        self._read_all = q(_READ_ALL)
        self._head = q(_HEAD)
        self._save_snapshot = q(_SAVE_SNAPSHOT)
        self._load_snapshot = q(_LOAD_SNAPSHOT)

    @property
    def table(self) -> str:
        return self.names.events

    @property
    def channel(self) -> str:
        return self.names.channel

    async def migrate(self) -> None:
        """Create the store's tables, the position counter row and the NOTIFY trigger if
        missing, in one transaction (safe to run again; the migration, never an import,
        creates them)."""
        async with self._connection() as conn, conn.transaction():
            for stmt in schema_statements(self.names):
                await conn.execute(stmt)

    # -- writing ---------------------------------------------------------------------
    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int,
        in_transaction: InTransaction | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` as versions ``expected_version + 1, ...`` of ``stream``
        (``expected_version=0``: the stream must be new), atomically, and return them as
        recorded. :class:`~.errors.ConcurrencyError` if the stream is not at
        ``expected_version``; nothing is written then. ``in_transaction`` runs inside the
        append's transaction after the insert. With ``conn`` the append runs in the
        caller's transaction on that connection (a savepoint if one is open; the caller
        commits), holding the position counter until that transaction ends."""
        if isinstance(expected_version, bool) or not 0 <= expected_version < _MAX_VERSION:
            raise ValueError(f"expected_version must be an integer >= 0, got {expected_version!r}")
        if not stream:
            raise ValueError("stream must be a non-empty string")
        if not events:
            return []
        docs = Jsonb(
            [
                {
                    "t": e.type,
                    "s": e.schema_version,
                    "d": e.data,
                    "m": e.metadata,
                    "i": e.event_id,
                    "c": e.correlation_id,
                    "k": e.causation_id,
                }
                for e in events
            ]
        )
        params = {"n": len(events), "expected": expected_version, "stream": stream, "docs": docs}
        hook = _HookState()
        try:
            if conn is not None:
                return await self._append_on(conn, stream, events, params, in_transaction, hook)
            async with self.connect() as c:
                return await self._append_on(c, stream, events, params, in_transaction, hook)
        except psycopg.OperationalError as exc:
            if hook.failed:
                raise
            raise EventStoreUnavailable(f"postgres: {exc}") from exc

    async def _append_on(
        self,
        conn: psycopg.AsyncConnection[Any],
        stream: str,
        events: Sequence[NewEvent],
        params: dict[str, Any],
        in_transaction: InTransaction | None,
        hook: _HookState,
    ) -> list[RecordedEvent]:
        expected: int = params["expected"]
        single = (
            in_transaction is None
            and conn.autocommit
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        try:
            # One statement is atomic on its own; otherwise a transaction (or a savepoint in
            # the caller's) so the hook's writes and the events commit or vanish together.
            tx = contextlib.nullcontext() if single else conn.transaction()
            async with tx:
                rows = await (await conn.execute(self._append, params)).fetchall()
                if not rows:
                    raise _Refused
                recorded = [
                    RecordedEvent(
                        position=int(pos),
                        stream=stream,
                        version=expected + i,
                        type=e.type,
                        data=dict(e.data),
                        schema_version=e.schema_version,
                        event_id=e.event_id,
                        correlation_id=e.correlation_id,
                        causation_id=e.causation_id,
                        metadata=dict(e.metadata),
                        recorded_at=at,
                    )
                    for i, (e, (pos, at)) in enumerate(zip(events, sorted(rows), strict=True), 1)
                ]
                if in_transaction is not None:
                    try:
                        await in_transaction(conn, recorded)
                    except BaseException:
                        hook.failed = True
                        raise
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != self.names.stream_version:
                raise
        except _Refused:
            pass
        else:
            return recorded
        actual = await self._current_version(conn, stream)
        raise ConcurrencyError(stream, expected, actual)

    async def _current_version(self, conn: psycopg.AsyncConnection[Any], stream: str) -> int:
        row = await (await conn.execute(self._version, (stream,))).fetchone()
        return int(row[0]) if row is not None else 0

    # -- reading ---------------------------------------------------------------------
    async def stream_version(self, stream: str) -> int:
        """The stream's current version (0 for a stream with no events)."""
        async with self._connection() as conn:
            return await self._current_version(conn, stream)

    async def read_stream(
        self, stream: str, *, from_version: int = 1, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """Events ``from_version .. to_version`` (inclusive; default: to the end) of
        ``stream`` in version order, as stored (no upcasting)."""
        upper = _MAX_VERSION if to_version is None else to_version
        async with self._connection() as conn:
            cur = await conn.execute(self._read_stream, (stream, from_version, upper))
            return [RecordedEvent(*row) for row in await cur.fetchall()]

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events with a global position above ``after``, in position
        order. Repeating with ``after`` = the last position returned reads every event
        exactly once, including ones committed while reading (positions follow commit
        order)."""
        async with self._connection() as conn:
            cur = await conn.execute(self._read_all, (after, limit))
            return [RecordedEvent(*row) for row in await cur.fetchall()]

    async def head(self) -> int:
        """The highest committed global position (0 for an empty store)."""
        async with self._connection() as conn:
            row = await (await conn.execute(self._head)).fetchone()
            return int(row[0]) if row is not None else 0

    # -- snapshots -------------------------------------------------------------------
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the stream's latest unless a newer one (same
        ``schema_version``) is already stored."""
        args = (snapshot.stream, snapshot.version, snapshot.schema_version, Jsonb(snapshot.state))
        async with self._connection() as conn:
            await conn.execute(self._save_snapshot, args)

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        async with self._connection() as conn:
            row = await (await conn.execute(self._load_snapshot, (stream,))).fetchone()
        return None if row is None else Snapshot(row[0], int(row[1]), int(row[2]), row[3])

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self.connect() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise EventStoreUnavailable(f"postgres: {exc}") from exc


class _Refused(Exception):
    """The expected version's event does not exist: the stream is behind the writer."""
