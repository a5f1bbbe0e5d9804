"""The outbox: atomic with the caller's transaction, per-key commit order, stats,
clean-up, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from edge_kv.core.errors import InvalidInput
from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import CAUSATION_ID, CORRELATION_ID, Outbox, Relay, event_headers

from .fakes import RecordingPublisher


async def _business_table(pool: PgPool, name: str) -> sql.Identifier:
    ident = sql.Identifier(name)
    async with pool.connection() as conn:
        await conn.execute(sql.SQL("CREATE TABLE {} (id text PRIMARY KEY)").format(ident))
    return ident


async def _count(pool: PgPool, query: sql.Composed) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute(query)).fetchone()
    assert row is not None
    return int(row[0])


async def test_rollback_leaves_neither_commit_leaves_both(
    pool: PgPool, outbox: Outbox, tables: Callable[[str], str]
) -> None:
    orders = await _business_table(pool, tables("orders"))
    box = sql.Identifier(outbox.table)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with pool.connection() as conn, conn.transaction():
            await conn.execute(sql.SQL("INSERT INTO {} VALUES ('o-1')").format(orders))
            await outbox.add(conn, topic="orders", key="o-1", payload={"n": 1})
            raise Boom
    assert await _count(pool, sql.SQL("SELECT count(*) FROM {}").format(orders)) == 0
    assert await _count(pool, sql.SQL("SELECT count(*) FROM {}").format(box)) == 0

    async with pool.connection() as conn, conn.transaction():
        await conn.execute(sql.SQL("INSERT INTO {} VALUES ('o-2')").format(orders))
        eid = await outbox.add(conn, topic="orders", key="o-2", payload={"n": 2}, headers={"x": "y"})
    assert await _count(pool, sql.SQL("SELECT count(*) FROM {}").format(orders)) == 1
    assert (
        await _count(pool, sql.SQL("SELECT count(*) FROM {} WHERE id = {}").format(box, sql.Literal(eid)))
        == 1
    )

    # ... and the relay publishes only the committed one, with its correlation header.
    pub = RecordingPublisher()
    assert await Relay(outbox, pool, pub).drain() == 1
    [m] = pub.sent
    assert (m.id, m.key, m.payload, m.headers["x"]) == (eid, "o-2", {"n": 2}, "y")
    assert m.headers[CORRELATION_ID] == eid and m.correlation_id == eid and m.causation_id is None


async def test_add_refuses_a_connection_outside_a_transaction(pool: PgPool, outbox: Outbox) -> None:
    async with pool.connection() as conn:  # autocommit, no transaction block
        with pytest.raises(InvalidInput, match="transaction"):
            await outbox.add(conn, topic="t", key="k", payload=1)
        async with conn.transaction():
            for bad in ({"topic": ""}, {"key": "a\x00b"}, {"payload": object()}, {"headers": {"h": 1}}):
                args: dict[str, object] = {"topic": "t", "key": "k", "payload": 1, **bad}
                with pytest.raises(InvalidInput):
                    await outbox.add(conn, **args)  # type: ignore[arg-type]


async def test_explicit_event_id_and_causation_headers(pool: PgPool, outbox: Outbox) -> None:
    async with pool.connection() as conn, conn.transaction():
        eid = await outbox.add(
            conn, topic="t", key="k", payload=None, event_id="evt-1", headers=event_headers("corr-9", "evt-0")
        )
    assert eid == "evt-1"
    pub = RecordingPublisher()
    await Relay(outbox, pool, pub).drain()
    assert pub.sent[0].headers[CORRELATION_ID] == "corr-9" and pub.sent[0].headers[CAUSATION_ID] == "evt-0"
    with pytest.raises(psycopg.errors.UniqueViolation):
        async with pool.connection() as conn, conn.transaction():
            await outbox.add(conn, topic="t", key="k", payload=None, event_id="evt-1")


async def test_a_key_waits_for_the_open_transaction_that_wrote_it(pool: PgPool, outbox: Outbox) -> None:
    """The commit-order hazard: transaction A takes a lower seq for key k, B a higher one
    and commits first. The outbox serialises writers of one key, so B waits until A
    commits and A's event is published first; another key is not held up."""
    pub = RecordingPublisher()
    relay = Relay(outbox, pool, pub)
    a_added = asyncio.Event()
    a_may_commit = asyncio.Event()

    async def txn_a() -> None:
        async with pool.connection() as conn, conn.transaction():
            await outbox.add(conn, topic="t", key="k", payload="A", event_id="A")
            a_added.set()
            await a_may_commit.wait()

    async def txn_b() -> None:
        async with pool.connection() as conn, conn.transaction():
            await outbox.add(conn, topic="t", key="k", payload="B", event_id="B")

    task_a = asyncio.create_task(txn_a())
    await a_added.wait()
    task_b = asyncio.create_task(txn_b())
    async with pool.connection() as conn, conn.transaction():  # other keys flow meanwhile
        await outbox.add(conn, topic="t", key="other", payload="C", event_id="C")
    await asyncio.sleep(0.3)
    assert not task_b.done(), "B must wait for A: it writes the same key"
    assert await relay.drain() == 1 and [m.id for m in pub.sent] == ["C"]
    a_may_commit.set()
    await asyncio.gather(task_a, task_b)
    await relay.drain()
    assert [m.id for m in pub.sent] == ["C", "A", "B"]


async def test_a_lower_seq_committed_later_is_not_lost_or_overtaken(pool: PgPool, outbox: Outbox) -> None:
    """Across keys a lower seq can commit after a higher one has been published; the
    relay claims by key, not by a seq cursor, so it is still published."""
    pub = RecordingPublisher()
    relay = Relay(outbox, pool, pub)

    async def after_low() -> None:
        async with pool.connection() as conn, conn.transaction():
            await outbox.add(conn, topic="t", key="k1", payload=3, event_id="after-low")

    async with pool.connection() as slow, slow.transaction():
        await outbox.add(slow, topic="t", key="k1", payload=1, event_id="low")
        async with pool.connection() as fast, fast.transaction():
            await outbox.add(fast, topic="t", key="k2", payload=2, event_id="high")
        assert await relay.drain() == 1
        waiting = asyncio.create_task(after_low())  # same key: waits for `slow`
        await asyncio.sleep(0.1)
        assert not waiting.done()
    await waiting
    await relay.drain()
    assert [m.id for m in pub.sent] == ["high", "low", "after-low"]


async def test_stats_cleanup_and_dead_letters(pool: PgPool, outbox: Outbox) -> None:
    empty = await outbox.stats(pool)
    assert (empty.pending, empty.oldest_pending_age_s, empty.dead) == (0, None, 0)
    async with pool.connection() as conn, conn.transaction():
        for i in range(5):
            await outbox.add(conn, topic="t", key=f"k{i % 2}", payload=i, event_id=f"e{i}")
    await asyncio.sleep(0.05)
    st = await outbox.stats(pool)
    assert st.pending == 5 and st.oldest_pending_age_s is not None and st.oldest_pending_age_s >= 0.04

    # e0 (key k0) is refused by the broker: it retries with backoff, then dead-letters;
    # the rest of k0 waits behind it meanwhile, k1 flows.
    from edge_kv.core.backoff import Exponential
    from edge_kv.origin.resilience import RetryPolicy

    pub = RecordingPublisher(fail=lambda m: m.id == "e0")
    relay = Relay(
        outbox, pool, pub, retry=RetryPolicy(max_attempts=3, backoff=Exponential(base=0.05, cap=0.05))
    )
    await relay.drain()
    assert [m.id for m in pub.sent] == ["e1", "e3"]
    st = await outbox.stats(pool)
    assert (st.pending, st.retrying, st.published_retained) == (3, 1, 2)
    for _ in range(2):
        await asyncio.sleep(0.08)
        await relay.drain()
    assert [m.id for m in pub.sent] == ["e1", "e3", "e2", "e4"]
    st = await outbox.stats(pool)
    assert (st.pending, st.dead, relay.metrics.dead_lettered, relay.metrics.failed) == (0, 1, 1, 3)
    [dead] = await outbox.dead_letters(pool)
    assert dead.id == "e0" and dead.attempts == 3 and dead.last_error == "PublishFailed: refused e0"

    assert await outbox.cleanup(pool, retain_s=3600) == 0
    assert await outbox.cleanup(pool) == 4
    assert (await outbox.stats(pool)).published_retained == 0

    # Requeued, it goes behind the pending events of its key and is published.
    assert await outbox.requeue_dead(pool, "e0") and not await outbox.requeue_dead(pool, "e0")
    pub.fail = None
    await relay.drain()
    assert pub.sent[-1].id == "e0" and (await outbox.stats(pool)).dead == 0


async def test_migrate_is_idempotent_and_concurrent(pool: PgPool, tables: Callable[[str], str]) -> None:
    box = Outbox(tables("outbox"))
    await asyncio.gather(box.migrate(pool), box.migrate(pool), box.migrate(pool))
    assert (await box.stats(pool)).pending == 0
