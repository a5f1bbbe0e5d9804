#!/usr/bin/env python3
"""Benchmark: edge_kv.origin.eventsourcing vs the `eventsourcing` library (9.x, its
PostgreSQL application recorder), on the same PostgreSQL in the same run.

Uses the PostgreSQL at EDGE_KV_PG_DSN (default postgresql://postgres@127.0.0.1:5432/test)
in a random schema dropped at the end; needs the `bench` extra (`EDGE_KV_BENCH=1
scripts/setup`, or `pip install "eventsourcing[postgres]"`).

Cells, each measured in ROUNDS round-robin rounds (ours and theirs alternate, best round
kept, since the machine is shared):
  * append single  - sequential appends of one event to a new stream (events/s);
  * append batched - sequential appends of BATCH events to a new stream (events/s);
  * load replay    - load an aggregate of 10,000 events by replaying them (ms);
  * load snapshot  - load the same aggregate from a snapshot at its last version (ms).
Both libraries serialise appends database-wide to get gap-free positions in commit
order (ours: a one-row counter; theirs: LOCK TABLE .. IN EXCLUSIVE MODE), and both
commit each append, so the numbers compare like with like. Ours is asyncio (psycopg
AsyncConnection), theirs is synchronous (psycopg Connection); both one connection.

    .venv/bin/python scripts/bench_eventsourcing.py [--appends 500] [--load-events 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from edge_kv.origin.eventsourcing import Aggregate, EventStore, NewEvent, PgPool, Repository, applies

PG_DSN = os.environ.get("EDGE_KV_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
ROUNDS = 3
BATCH = 100


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0

    def deposit(self, amount: int) -> None:
        self.record("Deposited", {"amount": amount})

    @applies("Deposited")
    def _deposited(self, data: dict[str, Any]) -> None:
        self.balance += data["amount"]


def their_account_class() -> Any:
    """The same aggregate for `eventsourcing`, built at run time so this script
    type-checks without the `bench` extra (the class is a module global so the library
    can resolve its topic)."""
    domain = importlib.import_module("eventsourcing.domain")

    def __init__(self: Any) -> None:
        self.balance = 0

    def deposit(self: Any, amount: int) -> None:
        self.balance += amount

    ns = {
        "__module__": __name__,
        "__qualname__": "EsAccount",
        "__init__": __init__,
        "deposit": domain.event("Deposited")(deposit),
    }
    cls = type("EsAccount", (domain.Aggregate,), ns)
    globals()["EsAccount"] = cls
    return cls


@dataclass
class Cell:
    name: str
    unit: str  # "events/s" (higher is better) or "ms" (lower is better)
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)

    def best(self, xs: list[float]) -> float:
        return max(xs) if self.unit == "events/s" else min(xs)


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


def timed_sync(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def bench(appends: int, load_events: int) -> list[Cell]:
    schema = f"edge_kv_bench_es_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = urlparse(PG_DSN)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_SCHEMA": schema,
    }
    application = importlib.import_module("eventsourcing.application")
    persistence = importlib.import_module("eventsourcing.persistence")
    es_account = their_account_class()
    # Two applications on the same tables: one that never looks for snapshots (replay),
    # one with snapshotting enabled.
    app = application.Application(env=env)
    app_snap = application.Application(env={**env, "IS_SNAPSHOTTING_ENABLED": "y"})
    pool = PgPool(PG_DSN, size=1)
    try:
        store = EventStore(pool, table=f"{schema}.events")
        await store.migrate()
        repo = Repository(store, Account, snapshot_every=None)
        recorder = app.recorder
        body = json.dumps({"amount": 1}).encode()

        def stored(oid: uuid.UUID, version: int) -> Any:
            return persistence.StoredEvent(
                originator_id=oid, originator_version=version, topic="bench:Deposited", state=body
            )

        async def ours_single() -> None:
            for _ in range(appends):
                await store.append(
                    uuid.uuid4().hex, [NewEvent("Deposited", {"amount": 1})], expected_version=0
                )

        def theirs_single() -> None:
            for _ in range(appends):
                recorder.insert_events([stored(uuid.uuid4(), 1)])

        async def ours_batched() -> None:
            for _ in range(appends // 10):
                events = [NewEvent("Deposited", {"amount": 1}) for _ in range(BATCH)]
                await store.append(uuid.uuid4().hex, events, expected_version=0)

        def theirs_batched() -> None:
            for _ in range(appends // 10):
                oid = uuid.uuid4()
                recorder.insert_events([stored(oid, v) for v in range(1, BATCH + 1)])

        # The aggregates to load: load_events events each (one big append to set up).
        ours_agg = Account("big")
        for _ in range(load_events):
            ours_agg.deposit(1)
        await repo.save(ours_agg)
        ours_snap = Repository(store, Account, snapshot_every=1)
        theirs_agg = es_account()
        for _ in range(load_events - 1):  # their constructor records the first event
            theirs_agg.deposit(1)
        app.save(theirs_agg)

        async def ours_load() -> None:
            agg = await repo.load("big")
            assert agg.version == load_events and agg.balance == load_events

        def theirs_load() -> None:
            agg = app.repository.get(theirs_agg.id)
            assert agg.version == load_events and agg.balance == load_events - 1

        snapshot_taken = False

        async def ours_load_snapshot() -> None:
            agg = await ours_snap.load("big")
            assert agg.version == load_events

        def theirs_load_snapshot() -> None:
            agg = app_snap.repository.get(theirs_agg.id)
            assert agg.version == load_events

        cells = [
            Cell("append single", "events/s"),
            Cell("append batched (100/append)", "events/s"),
            Cell(f"load {load_events:,} events, replay", "ms"),
            Cell(f"load {load_events:,} events, snapshot", "ms"),
        ]
        # Warm-up: connections, prepared statements, table caches.
        for _ in range(20):
            await store.append(uuid.uuid4().hex, [NewEvent("Deposited", {"amount": 1})], expected_version=0)
            recorder.insert_events([stored(uuid.uuid4(), 1)])
        await ours_load()
        theirs_load()
        for _ in range(ROUNDS):
            cells[0].ours.append(appends / await timed(ours_single))
            cells[0].theirs.append(appends / timed_sync(theirs_single))
            cells[1].ours.append(appends // 10 * BATCH / await timed(ours_batched))
            cells[1].theirs.append(appends // 10 * BATCH / timed_sync(theirs_batched))
            cells[2].ours.append(await timed(ours_load) * 1000)
            cells[2].theirs.append(timed_sync(theirs_load) * 1000)
            if not snapshot_taken:
                await store.save_snapshot(ours_agg.take_snapshot())
                app_snap.take_snapshot(theirs_agg.id)
                snapshot_taken = True
            cells[3].ours.append(await timed(ours_load_snapshot) * 1000)
            cells[3].theirs.append(timed_sync(theirs_load_snapshot) * 1000)
        return cells
    finally:
        await pool.close()
        app.close()
        app_snap.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def table(cells: list[Cell], appends: int) -> str:
    out = [
        f"single appends per round: {appends}; batched: {appends // 10} appends of {BATCH}; best of {ROUNDS} rounds",
        "",
        "| operation | edge_kv | eventsourcing | ratio (edge_kv / eventsourcing) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c in cells:
        ours, theirs = c.best(c.ours), c.best(c.theirs)
        if c.unit == "events/s":
            out.append(
                f"| {c.name} | {ours:,.0f} events/s | {theirs:,.0f} events/s | {ours / theirs:.2f}x throughput |"
            )
        else:
            out.append(f"| {c.name} | {ours:,.2f} ms | {theirs:,.2f} ms | {ours / theirs:.2f}x time |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--appends", type=int, default=500)
    ap.add_argument("--load-events", type=int, default=10_000)
    args = ap.parse_args()
    if args.appends < 10 or args.load_events < 2:
        ap.error("--appends must be >= 10 and --load-events >= 2")
    print(table(asyncio.run(bench(args.appends, args.load_events)), args.appends))


if __name__ == "__main__":
    main()
