"""The projection runner: follows live by NOTIFY (and by polling without it), stops
cleanly, surfaces a projection error, and rebuilds into a new table that equals the live
read model, while appends and the live runner go on."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
import pytest
from psycopg import sql

from edge_kv.origin.eventsourcing import EventStore, NewEvent, Projection, ProjectionRunner, RecordedEvent

from .conftest import bulk_append, qualified
from .projection_child import TallyProjection, ident


async def table_rows(store: EventStore, table: str) -> list[tuple[Any, ...]]:
    async with store.connect() as conn:
        cur = await conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(ident(table)))
        return list(await cur.fetchall())


async def truth(store: EventStore) -> list[tuple[Any, ...]]:
    """The tally computed by SQL straight from the events table."""
    async with store.connect() as conn:
        cur = await conn.execute(
            sql.SQL(
                "SELECT stream, count(*), sum((data->>'amount')::bigint), max(version), sum(position)"
                " FROM {} GROUP BY stream ORDER BY stream"
            ).format(ident(store.table))
        )
        return list(await cur.fetchall())


async def append_random(store: EventStore, rng: random.Random, n: int, versions: dict[str, int]) -> None:
    for _ in range(n):
        stream = f"acc-{rng.randrange(8)}"
        k = rng.randint(1, 3)
        events = [NewEvent("Deposited", {"amount": rng.randint(1, 100)}) for _ in range(k)]
        await store.append(stream, events, expected_version=versions.get(stream, 0))
        versions[stream] = versions.get(stream, 0) + k


async def test_follows_live_through_notify(store: EventStore) -> None:
    tally = TallyProjection(qualified(store, "tally"))
    # A 60 s poll interval: only a notification can wake the runner within the test.
    async with ProjectionRunner(store, tally, poll_interval=60) as runner:
        await runner.wait_for(0)
        for i in range(1, 4):
            [e] = await store.append("s", [NewEvent("Deposited", {"amount": 10})], expected_version=i - 1)
            await runner.wait_for(e.position, timeout=5)
    assert await table_rows(store, tally.table) == [("s", 3, 30, 3, 6)]


async def test_follows_by_polling_without_listen(store: EventStore) -> None:
    tally = TallyProjection(qualified(store, "tally"))
    async with ProjectionRunner(store, tally, listen=False, poll_interval=0.05) as runner:
        [e] = await store.append("s", [NewEvent("Deposited", {"amount": 4})], expected_version=0)
        await runner.wait_for(e.position, timeout=5)
    assert await table_rows(store, tally.table) == [("s", 1, 4, 1, 1)]


async def test_catch_up_reads_in_batches_and_resumes_from_the_checkpoint(store: EventStore) -> None:
    await bulk_append(store, [(f"s{i % 3}", i // 3 + 1, "Deposited", {"amount": i}) for i in range(30)])
    tally = TallyProjection(qualified(store, "tally"))
    runner = ProjectionRunner(store, tally, batch_size=4)
    await runner.setup()
    assert await runner.step() == 4 and runner.position == 4
    again = ProjectionRunner(store, tally, batch_size=100)  # a new process: reads the checkpoint
    await again.setup()
    assert again.position == 4
    assert await again.catch_up() == 26 and again.position == 30
    assert await again.catch_up() == 0
    assert await table_rows(store, tally.table) == await truth(store)


class Exploding(Projection):
    def __init__(self, table: str) -> None:
        self.name, self.table = "exploding", table

    async def create(self, conn: psycopg.AsyncConnection[Any], table: str) -> None:
        await conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (n int)").format(ident(table)))

    async def handle(self, conn: psycopg.AsyncConnection[Any], event: RecordedEvent, table: str) -> None:
        await conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(ident(table)))
        if event.type == "Poison":
            raise ValueError("cannot project this")


async def test_a_projection_error_stops_the_runner_and_rolls_the_batch_back(store: EventStore) -> None:
    model = Exploding(qualified(store, "x"))
    await store.append("s", [NewEvent("Fine", {}), NewEvent("Poison", {})], expected_version=0)
    runner = ProjectionRunner(store, model, poll_interval=0.05)
    await runner.start()
    with pytest.raises(ValueError, match="cannot project"):
        await runner.wait_for(2)
    with pytest.raises(ValueError, match="cannot project"):
        await runner.stop()
    assert runner.position == 0
    assert await table_rows(store, model.table) == []  # the batch's first insert rolled back too


async def test_stop_is_prompt_and_the_runner_is_bounded(store: EventStore) -> None:
    runner = ProjectionRunner(store, TallyProjection(qualified(store, "t")), poll_interval=60)
    await runner.start()
    await runner.wait_for(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await runner.stop()
    assert loop.time() - t0 < 1.0
    await runner.stop()  # idempotent
    with pytest.raises(ValueError):
        ProjectionRunner(store, TallyProjection("t"), batch_size=0)


async def test_rebuild_equals_the_live_read_model(store: EventStore) -> None:
    rng = random.Random(3)
    versions: dict[str, int] = {}
    await append_random(store, rng, 60, versions)
    tally = TallyProjection(qualified(store, "tally"))
    async with ProjectionRunner(store, tally, poll_interval=0.05, batch_size=16) as runner:
        await runner.wait_for(await store.head())
        live = await table_rows(store, tally.table)
        assert live == await truth(store)
        rebuilt_at = await ProjectionRunner(store, tally, batch_size=16).rebuild()
        assert rebuilt_at == await store.head()
        assert await table_rows(store, tally.table) == live
        # The live runner goes on with the swapped-in table.
        await append_random(store, rng, 10, versions)
        await runner.wait_for(await store.head())
    assert await table_rows(store, tally.table) == await truth(store)
    async with store.connect() as conn:  # no leftover rebuild tables or checkpoints
        cur = await conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
            (store.table.split(".")[0], tally.table.split(".")[1] + "_rb_%"),
        )
        assert (await cur.fetchone()) == (0,)


async def test_rebuild_while_appends_and_the_live_runner_continue(store: EventStore) -> None:
    rng = random.Random(11)
    versions: dict[str, int] = {}
    await append_random(store, rng, 40, versions)
    tally = TallyProjection(qualified(store, "tally"))
    async with ProjectionRunner(store, tally, poll_interval=0.05, batch_size=8) as runner:
        writer = asyncio.create_task(append_random(store, rng, 80, versions))
        await asyncio.sleep(0.05)
        await ProjectionRunner(store, tally, batch_size=8).rebuild()
        await writer
        await runner.wait_for(await store.head())
    assert await table_rows(store, tally.table) == await truth(store)
