"""The read models the projection tests use, and the child process of the kill test:
catches the tally projection up over the store's events until killed (or done).

    python projection_child.py PG_DSN EVENTS_TABLE READ_MODEL_TABLE BATCH_SIZE
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from edge_kv.origin.eventsourcing import EventStore, PgPool, Projection, ProjectionRunner, RecordedEvent


def ident(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


class TallyProjection(Projection):
    """Per stream: how many events, the sum of their ``amount``, the last version and the
    sum of positions. Refuses (raises) an event that is not the stream's next version, so
    an event applied twice, skipped or out of order fails the batch, not only the final
    comparison."""

    def __init__(self, table: str, name: str = "tally") -> None:
        self.name = name
        self.table = table

    async def create(self, conn: psycopg.AsyncConnection[Any], table: str) -> None:
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (stream text PRIMARY KEY, events bigint NOT NULL,"
                " total bigint NOT NULL, last_version bigint NOT NULL, position_sum bigint NOT NULL)"
            ).format(ident(table))
        )

    async def handle_batch(
        self, conn: psycopg.AsyncConnection[Any], events: Sequence[RecordedEvent], table: str
    ) -> None:
        per: dict[str, list[int]] = {}  # stream -> [first version, count, total, last version, position sum]
        for e in events:
            row = per.get(e.stream)
            if row is None:
                per[e.stream] = [e.version, 1, int(e.data.get("amount", 0)), e.version, e.position]
                continue
            if e.version != row[3] + 1:
                raise AssertionError(f"{e.stream}: version {e.version} after {row[3]}")
            row[1] += 1
            row[2] += int(e.data.get("amount", 0))
            row[3] = e.version
            row[4] += e.position
        streams = list(per)
        cols = [list(c) for c in zip(*per.values(), strict=True)]
        cur = await conn.execute(
            sql.SQL(
                "INSERT INTO {t} AS t (stream, events, total, last_version, position_sum)"
                " SELECT s, n, tot, lv, ps FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[],"
                " %s::bigint[], %s::bigint[]) AS u(s, fv, n, tot, lv, ps) WHERE fv = 1"
                " ON CONFLICT (stream) DO NOTHING"
            ).format(t=ident(table)),
            (streams, *cols),
        )
        created = cur.rowcount
        cur = await conn.execute(
            sql.SQL(
                "UPDATE {t} AS t SET events = t.events + u.n, total = t.total + u.tot, last_version = u.lv,"
                " position_sum = t.position_sum + u.ps"
                " FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],"
                " %s::bigint[]) AS u(s, fv, n, tot, lv, ps)"
                " WHERE t.stream = u.s AND u.fv > 1 AND t.last_version = u.fv - 1"
            ).format(t=ident(table)),
            (streams, *cols),
        )
        if created + cur.rowcount != len(streams):
            raise AssertionError("an event is not its stream's next version (applied twice or skipped?)")


class RecorderProjection(Projection):
    """Records every position it is given, in the order given (``seq``); the primary key
    on ``position`` makes a second delivery of an event fail its batch."""

    def __init__(self, table: str, name: str = "recorder") -> None:
        self.name = name
        self.table = table

    async def create(self, conn: psycopg.AsyncConnection[Any], table: str) -> None:
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, seq bigserial, stream text)"
            ).format(ident(table))
        )

    async def handle(self, conn: psycopg.AsyncConnection[Any], event: RecordedEvent, table: str) -> None:
        await conn.execute(
            sql.SQL("INSERT INTO {} (position, stream) VALUES (%s, %s)").format(ident(table)),
            (event.position, event.stream),
        )


async def main(dsn: str, events_table: str, read_model: str, batch_size: str) -> None:
    async with PgPool(dsn, size=2) as pool:
        store = EventStore(pool, table=events_table)
        runner = ProjectionRunner(store, TallyProjection(read_model), batch_size=int(batch_size))
        await runner.setup()
        print("started", runner.position, flush=True)
        await runner.catch_up()
        print("done", runner.position, flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
