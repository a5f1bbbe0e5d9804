"""A projection process SIGKILLed at random points while catching up over 50,000 events
ends with the same read model as one built without interruption: the checkpoint and the
read-model update commit together, so no kill applies an event twice or skips one (the
tally projection would also fail its batch on either)."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from pathlib import Path

import pytest
from psycopg import sql

from edge_kv.origin.eventsourcing import EventStore, ProjectionRunner

from .conftest import bulk_append, qualified
from .projection_child import TallyProjection, ident
from .test_projection import table_rows, truth

CHILD = Path(__file__).with_name("projection_child.py")
EVENTS = 50_000
STREAMS = 500
BATCH = 250


async def checkpoint(store: EventStore, name: str) -> int:
    async with store.connect() as conn:
        cur = await conn.execute(
            sql.SQL("SELECT position FROM {} WHERE name = %s").format(ident(store.names.checkpoints)), (name,)
        )
        row = await cur.fetchone()
        return 0 if row is None else int(row[0])


@pytest.mark.slow
async def test_killed_projection_equals_an_uninterrupted_one(pg_dsn: str, store: EventStore) -> None:
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    rows = [
        (f"acc-{i % STREAMS}", i // STREAMS + 1, "Deposited", {"amount": rng.randint(1, 1000)})
        for i in range(EVENTS)
    ]
    assert await bulk_append(store, rows) == EVENTS

    model = qualified(store, "killed")
    kills: list[int] = []
    for _ in range(6):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            pg_dsn,
            store.table,
            model,
            str(BATCH),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line.startswith("started"):
            _, err = await proc.communicate()
            raise AssertionError(f"child failed to start: {line!r} {err.decode()}")
        if int(line.split()[1]) >= EVENTS:
            await proc.wait()
            break
        await asyncio.sleep(rng.uniform(0.1, 1.2))  # somewhere inside the catch-up
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        _out, err = await proc.communicate()
        assert proc.returncode in (-signal.SIGKILL, 0), err.decode()
        kills.append(await checkpoint(store, "tally"))
    # At least two kills landed mid-catch-up (not before the first batch, not after the last).
    assert sum(0 < k < EVENTS for k in kills) >= 2, (seed, kills)

    finisher = ProjectionRunner(store, TallyProjection(model), batch_size=1000)
    await finisher.setup()
    await finisher.catch_up()
    assert finisher.position == EVENTS

    reference = TallyProjection(qualified(store, "reference"), name="reference")
    t0 = time.perf_counter()
    uninterrupted = ProjectionRunner(store, reference, batch_size=1000)
    await uninterrupted.setup()
    assert await uninterrupted.catch_up() == EVENTS
    elapsed = time.perf_counter() - t0

    killed_rows = await table_rows(store, model)
    assert killed_rows == await table_rows(store, reference.table), (seed, kills)
    assert killed_rows == await truth(store)
    assert len(killed_rows) == STREAMS
    print(f"kills at checkpoints {kills}; uninterrupted catch-up of {EVENTS} events: {elapsed:.2f}s")
