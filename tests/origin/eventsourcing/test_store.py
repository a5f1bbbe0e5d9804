"""The event store on the real PostgreSQL: optimistic concurrency under 32 concurrent
writers, gap-free positions, reads, metadata, and the in-transaction hook (an outbox)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from edge_kv.core.errors import Conflict, EdgeKvError, error_from_code
from edge_kv.origin.eventsourcing import (
    ConcurrencyError,
    EventStore,
    EventStoreUnavailable,
    NewEvent,
    PgPool,
    RecordedEvent,
)

from .conftest import qualified

WRITERS = 32


def ev(type_: str = "Noted", **data: Any) -> NewEvent:
    return NewEvent(type_, data)


async def test_append_and_read_a_stream(store: EventStore) -> None:
    first = await store.append("s-1", [ev(n=1), ev(n=2)], expected_version=0)
    assert [(e.version, e.position, e.data) for e in first] == [(1, 1, {"n": 1}), (2, 2, {"n": 2})]
    more = await store.append("s-1", [ev(n=3)], expected_version=2)
    assert (more[0].version, more[0].position) == (3, 3)
    read = await store.read_stream("s-1")
    assert read == first + more
    assert await store.read_stream("s-1", from_version=2) == read[1:]
    assert await store.read_stream("s-1", from_version=2, to_version=2) == read[1:2]
    assert await store.stream_version("s-1") == 3
    assert await store.stream_version("nope") == 0
    assert await store.read_stream("nope") == []
    assert await store.head() == 3
    assert await store.append("s-1", [], expected_version=3) == []


async def test_metadata_is_stored_and_read_back(store: EventStore) -> None:
    e = NewEvent(
        "Deposited",
        {"amount": 5, "nested": {"a": [1, 2]}},
        schema_version=3,
        correlation_id="req-1",
        causation_id="msg-9",
        metadata={"user": "u1"},
    )
    [recorded] = await store.append("acc", [e], expected_version=0)
    [read] = await store.read_stream("acc")
    assert read == recorded
    assert (read.type, read.schema_version, read.event_id) == ("Deposited", 3, e.event_id)
    assert (read.correlation_id, read.causation_id, read.metadata) == ("req-1", "msg-9", {"user": "u1"})
    assert isinstance(read.recorded_at, datetime) and read.recorded_at.tzinfo is not None


async def test_wrong_expected_version_is_a_typed_conflict(store: EventStore) -> None:
    await store.append("s", [ev(), ev()], expected_version=0)
    for expected in (0, 1, 3, 10):
        with pytest.raises(ConcurrencyError) as info:
            await store.append("s", [ev()], expected_version=expected)
        err = info.value
        assert (err.stream, err.expected, err.actual) == ("s", expected, 2)
        assert isinstance(err, Conflict) and isinstance(err, EdgeKvError) and err.status == 409
        assert err.to_json()["code"] == "event_stream_conflict"
    # Nothing was written, and no position was used up: the next append is position 3.
    assert [e.version for e in await store.read_stream("s")] == [1, 2]
    [nxt] = await store.append("other", [ev()], expected_version=0)
    assert nxt.position == 3
    # Rebuilt from its code (the constructor needs the versions): the root, status kept.
    assert error_from_code("event_stream_conflict", "x", 409).status == 409


async def test_bad_arguments(store: EventStore) -> None:
    with pytest.raises(ValueError):
        await store.append("s", [ev()], expected_version=-1)
    with pytest.raises(ValueError):
        await store.append("", [ev()], expected_version=0)
    with pytest.raises(ValueError):
        NewEvent("", {})
    with pytest.raises(ValueError):
        NewEvent("T", {}, schema_version=0)
    with pytest.raises(ValueError):
        EventStore(lambda: None, table="a.b.c")


async def test_32_concurrent_writers_on_one_stream_same_expected_version(pg_dsn: str, table: str) -> None:
    """All 32 append version 1 at once: exactly one wins, the 31 others are refused with
    both versions, and the stream holds the winner's event only."""
    async with PgPool(pg_dsn, size=WRITERS) as pool:
        store = EventStore(pool, table=table)
        await store.migrate()
        # Open every connection first so the appends really start together.
        async with asyncio.TaskGroup() as tg:
            for _ in range(WRITERS):
                tg.create_task(store.head())
        start = asyncio.Event()

        async def writer(i: int) -> RecordedEvent | ConcurrencyError:
            await start.wait()
            try:
                [r] = await store.append("hot", [ev(writer=i)], expected_version=0)
                return r
            except ConcurrencyError as exc:
                return exc

        tasks = [asyncio.create_task(writer(i)) for i in range(WRITERS)]
        await asyncio.sleep(0.05)
        start.set()
        results = await asyncio.gather(*tasks)
        winners = [r for r in results if isinstance(r, RecordedEvent)]
        losers = [r for r in results if isinstance(r, ConcurrencyError)]
        assert len(winners) == 1 and len(losers) == WRITERS - 1
        assert all((e.stream, e.expected, e.actual) == ("hot", 0, 1) for e in losers)
        stored = await store.read_stream("hot")
        assert [(e.version, e.data) for e in stored] == [(1, winners[0].data)]
        assert await store.head() == 1


async def test_32_concurrent_writers_racing_to_extend_one_stream(pg_dsn: str, table: str) -> None:
    """32 writers each append 4 events one at a time, each time at the version they last
    read, retrying on conflict: every version 1..128 is written exactly once, every
    successful append's event is stored exactly once and no refused one is, there are no
    holes, and positions are 1..128 in version order."""
    per_writer = 4
    async with PgPool(pg_dsn, size=WRITERS) as pool:
        store = EventStore(pool, table=table)
        await store.migrate()
        conflicts: list[ConcurrencyError] = []
        written: list[str] = []

        async def writer(i: int) -> None:
            done = 0
            while done < per_writer:
                version = await store.stream_version("hot")
                tag = f"w{i}-{done}"
                try:
                    await store.append("hot", [ev(tag=tag)], expected_version=version)
                except ConcurrencyError as exc:
                    assert exc.expected == version and exc.actual > version
                    conflicts.append(exc)
                    continue
                written.append(tag)
                done += 1

        async with asyncio.TaskGroup() as tg:
            for i in range(WRITERS):
                tg.create_task(writer(i))
        stored = await store.read_stream("hot")
        total = WRITERS * per_writer
        assert [e.version for e in stored] == list(range(1, total + 1))
        assert [e.position for e in stored] == list(range(1, total + 1))
        tags = [e.data["tag"] for e in stored]
        assert len(set(tags)) == total and sorted(tags) == sorted(written)
        assert conflicts, "the writers never collided: the test proved nothing"
        assert await store.head() == total


async def test_batched_append_is_atomic_and_contiguous(store: EventStore) -> None:
    recorded = await store.append("b", [ev(i=i) for i in range(100)], expected_version=0)
    assert [e.version for e in recorded] == list(range(1, 101))
    assert [e.position for e in recorded] == list(range(1, 101))
    assert [e.data["i"] for e in await store.read_stream("b")] == list(range(100))


async def test_read_all_pages_by_position(store: EventStore) -> None:
    for i in range(5):
        await store.append(f"s{i % 2}", [ev(i=i), ev(i=i)], expected_version=(i // 2) * 2)
    seen: list[int] = []
    after = 0
    while batch := await store.read_all(after=after, limit=3):
        seen.extend(e.position for e in batch)
        after = batch[-1].position
    assert seen == list(range(1, 11))


# -- the in-transaction hook (an outbox) -----------------------------------------------
async def _outbox_table(store: EventStore) -> str:
    name = qualified(store, "outbox")
    async with store.connect() as conn:
        await conn.execute(
            sql.SQL(
                "CREATE TABLE {} (event_id text PRIMARY KEY, topic text, key text, payload jsonb)"
            ).format(sql.Identifier(*name.split(".")))
        )
    return name


class TinyOutbox:
    """The shape of the messaging package's ``Outbox.add`` (keyword arguments, writes in
    the caller's transaction), on a table of our own."""

    def __init__(self, table: str) -> None:
        self.insert = sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(
            sql.Identifier(*table.split("."))
        )

    async def add(
        self, conn: psycopg.AsyncConnection[Any], *, topic: str, key: str, payload: Any, event_id: str
    ) -> str:
        await conn.execute(self.insert, (event_id, topic, key, psycopg.types.json.Jsonb(payload)))
        return event_id


async def _count(store: EventStore, table: str) -> int:
    async with store.connect() as conn:
        cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split("."))))
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_hook_writes_in_the_append_transaction(store: EventStore) -> None:
    outbox = TinyOutbox(await _outbox_table(store))
    calls: list[list[int]] = []

    async def publish(conn: psycopg.AsyncConnection[Any], recorded: Sequence[RecordedEvent]) -> None:
        calls.append([e.position for e in recorded])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        for e in recorded:
            await outbox.add(conn, topic="orders", key=e.stream, payload=e.data, event_id=e.event_id)

    recorded = await store.append("o-1", [ev(a=1), ev(a=2)], expected_version=0, in_transaction=publish)
    assert calls == [[1, 2]]
    assert await _count(store, qualified(store, "outbox")) == 2
    async with store.connect() as conn:
        cur = await conn.execute(
            sql.SQL("SELECT event_id FROM {} ORDER BY event_id").format(
                sql.Identifier(*qualified(store, "outbox").split("."))
            )
        )
        assert sorted(r[0] for r in await cur.fetchall()) == sorted(e.event_id for e in recorded)


async def test_a_failing_hook_leaves_no_events_and_no_outbox_rows(store: EventStore) -> None:
    outbox = TinyOutbox(await _outbox_table(store))
    await store.append("o-1", [ev()], expected_version=0)

    async def publish_then_fail(
        conn: psycopg.AsyncConnection[Any], recorded: Sequence[RecordedEvent]
    ) -> None:
        for e in recorded:
            await outbox.add(conn, topic="t", key=e.stream, payload=e.data, event_id=e.event_id)
        raise RuntimeError("broker config missing")

    with pytest.raises(RuntimeError, match="broker config"):
        await store.append("o-1", [ev(), ev()], expected_version=1, in_transaction=publish_then_fail)

    async def bad_sql(conn: psycopg.AsyncConnection[Any], recorded: Sequence[RecordedEvent]) -> None:
        await conn.execute("SELECT 1/0")

    with pytest.raises(psycopg.errors.DivisionByZero):  # the hook's own error, unchanged
        await store.append("o-2", [ev()], expected_version=0, in_transaction=bad_sql)
    assert [e.version for e in await store.read_stream("o-1")] == [1]
    assert await store.read_stream("o-2") == []
    assert await _count(store, qualified(store, "outbox")) == 0
    assert await store.head() == 1
    [nxt] = await store.append("o-1", [ev()], expected_version=1)
    assert nxt.position == 2  # the rolled-back appends used up no position


async def test_a_refused_append_does_not_run_the_hook(store: EventStore) -> None:
    await store.append("s", [ev()], expected_version=0)
    ran: list[int] = []

    async def hook(conn: psycopg.AsyncConnection[Any], recorded: Sequence[RecordedEvent]) -> None:
        ran.append(1)

    with pytest.raises(ConcurrencyError):
        await store.append("s", [ev()], expected_version=0, in_transaction=hook)
    with pytest.raises(ConcurrencyError):
        await store.append("s", [ev()], expected_version=4, in_transaction=hook)
    assert ran == []


async def test_append_in_the_callers_transaction_spans_streams(store: EventStore) -> None:
    """Two streams in one transaction of the caller: both commit, or neither."""
    async with store.connect() as conn:
        async with conn.transaction():
            await store.append("from", [ev(amount=-5)], expected_version=0, conn=conn)
            await store.append("to", [ev(amount=5)], expected_version=0, conn=conn)
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await store.append("from", [ev(amount=-1)], expected_version=1, conn=conn)
                await store.append("to", [ev(amount=1)], expected_version=1, conn=conn)
                raise RuntimeError("abort the transfer")
        # A conflict inside the caller's transaction rolls back to a savepoint only.
        async with conn.transaction():
            await store.append("from", [ev(amount=-2)], expected_version=1, conn=conn)
            with pytest.raises(ConcurrencyError):
                await store.append("to", [ev(amount=2)], expected_version=0, conn=conn)
    assert [e.data["amount"] for e in await store.read_stream("from")] == [-5, -2]
    assert [e.data["amount"] for e in await store.read_stream("to")] == [5]
    assert [e.position for e in await store.read_all()] == [1, 2, 3]


async def test_unreachable_database_is_unavailable(table: str) -> None:
    async with PgPool("postgresql://postgres@127.0.0.1:1/none", size=1, connect_timeout_s=1) as pool:
        store = EventStore(pool, table=table)
        with pytest.raises(EventStoreUnavailable):
            await store.append("s", [ev()], expected_version=0)
        with pytest.raises(EventStoreUnavailable):
            await store.read_stream("s")


async def test_migrate_is_repeatable_and_names_follow_the_table(store: EventStore, table: str) -> None:
    await store.migrate()
    schema, base = table.split(".")
    assert store.names.positions == f"{schema}.{base}_positions"
    assert store.channel == f"edge_kv_events:{table}"
    with pytest.raises(ValueError):
        EventStore(store.connect, table=f"{schema}.{'x' * 60}")
    EventStore(store.connect, table=f"{schema}.{'x' * 60}", channel=f"c{uuid.uuid4().hex}")
