"""Global order: a reader following positions never skips an event committed late.

The race, built deliberately: transaction A takes the lower position and stays open (its
in-transaction hook waits on a gate) while transaction B appends. With positions from a
plain sequence, B takes the next number and commits first, a reader checkpoints past A's
number, and A's event, committed afterwards, is never read (the control test shows that
happening on a bare table). In the store, B cannot take a position until A has committed,
so the reader sees A's event and then B's, each once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from edge_kv.origin.eventsourcing import EventStore, NewEvent, ProjectionRunner, RecordedEvent

from .conftest import qualified
from .projection_child import RecorderProjection, ident


async def recorded_positions(store: EventStore, table: str) -> list[int]:
    async with store.connect() as conn:
        cur = await conn.execute(sql.SQL("SELECT position FROM {} ORDER BY seq").format(ident(table)))
        return [int(r[0]) for r in await cur.fetchall()]


async def test_control_a_sequence_and_a_naive_reader_skip_the_late_commit(
    pg_dsn: str, store: EventStore
) -> None:
    """Without the store's counter the constructed race loses an event: proof that the
    scenario below is a real race, not one that cannot happen."""
    bare = ident(qualified(store, "bare"))
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as setup:
        await setup.execute(
            sql.SQL("CREATE TABLE {} (position bigserial PRIMARY KEY, body text)").format(bare)
        )
    async with (
        await psycopg.AsyncConnection.connect(pg_dsn) as a,
        await psycopg.AsyncConnection.connect(pg_dsn) as b,
        await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as reader,
    ):
        await a.execute(sql.SQL("INSERT INTO {} (body) VALUES ('A')").format(bare))  # takes 1, stays open
        await b.execute(sql.SQL("INSERT INTO {} (body) VALUES ('B')").format(bare))  # takes 2
        await b.commit()
        seen: list[int] = []
        checkpoint = 0
        for _ in range(2):
            cur = await reader.execute(
                sql.SQL("SELECT position FROM {} WHERE position > %s ORDER BY position").format(bare),
                (checkpoint,),
            )
            rows = [int(r[0]) for r in await cur.fetchall()]
            seen += rows
            checkpoint = max([checkpoint, *rows])
            await a.commit()  # A commits after the reader moved past its position
    assert seen == [2], seen  # position 1 was skipped for good


async def test_a_lower_position_committed_late_is_seen_once_and_in_order(store: EventStore) -> None:
    gate, inside = asyncio.Event(), asyncio.Event()

    async def hold(conn: psycopg.AsyncConnection[Any], recorded: Sequence[RecordedEvent]) -> None:
        inside.set()
        await gate.wait()

    recorder = RecorderProjection(qualified(store, "rec"))
    async with ProjectionRunner(store, recorder, poll_interval=0.02, batch_size=1) as runner:
        a = asyncio.create_task(
            store.append("A", [NewEvent("E", {})], expected_version=0, in_transaction=hold)
        )
        await inside.wait()  # A holds position 1, not committed
        b = asyncio.create_task(store.append("B", [NewEvent("E", {})], expected_version=0))
        await asyncio.sleep(0.3)  # the reader polls ~15 times meanwhile
        assert not b.done(), "B took a position while A, holding a lower one, was open"
        assert runner.position == 0 and await recorded_positions(store, recorder.table) == []
        gate.set()
        [ra], [rb] = await a, await b
        assert (ra.position, rb.position) == (1, 2)
        await runner.wait_for(2)
    assert await recorded_positions(store, recorder.table) == [1, 2]


async def test_concurrent_writers_with_random_commit_delays_two_live_runners(
    pg_dsn: str, store: EventStore
) -> None:
    """12 writers append with random delays inside their transactions while two runners
    of the same projection follow live: every position is recorded exactly once (the
    primary key would fail a second delivery) and in position order."""
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.01) for _ in range(240)]

    async def slow(conn: psycopg.AsyncConnection[Any], recorded: Sequence[RecordedEvent]) -> None:
        await asyncio.sleep(delays[recorded[0].position % len(delays)])

    async def writer(i: int) -> None:
        for n in range(20):
            events = [NewEvent("E", {"n": n})] * (1 + n % 3)
            await store.append(
                f"w{i}", events, expected_version=sum(1 + k % 3 for k in range(n)), in_transaction=slow
            )

    recorder = RecorderProjection(qualified(store, "rec"))
    async with (
        ProjectionRunner(store, recorder, poll_interval=0.5, batch_size=7) as r1,
        ProjectionRunner(store, recorder, poll_interval=0.5, batch_size=5) as r2,
    ):
        async with asyncio.TaskGroup() as tg:
            for i in range(12):
                tg.create_task(writer(i))
        head = await store.head()
        assert head == 12 * sum(1 + k % 3 for k in range(20))
        await r1.wait_for(head, timeout=20)
        await r2.wait_for(head, timeout=20)
    assert r1.events + r2.events == head  # between them, each event once
    assert await recorded_positions(store, recorder.table) == list(range(1, head + 1))
