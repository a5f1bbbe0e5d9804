"""An order service on edge_kv.origin.messaging: it writes, publishes and runs a saga.

1. ``place_order`` inserts the order *and* its ``order.placed`` event in one PostgreSQL
   transaction (the transactional outbox): both commit, or neither.
2. A :class:`Relay` publishes the event to a Redis Stream (at least once, per-order
   order kept).
3. A :class:`StreamConsumer` in group ``fulfilment`` handles it: through an
   :class:`Inbox` (the inbox row and the order update commit together, so a
   redelivered event changes nothing), then
4. it runs the ``fulfil-order`` saga (reserve stock, charge the card, each with its
   compensation), idempotent on the order id; a declined card releases the stock
   again. Every saga transition is an event in the same outbox, carrying the order's
   correlation id, and so is the final ``order.completed``/``order.compensated``.

Run it (PostgreSQL at PG_DSN; starts its own throwaway redis-server unless REDIS_URL is set):

    PG_DSN=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python docs/examples/order_service.py
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg
import redis.asyncio as aioredis
from psycopg import sql

from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import (
    Delivery,
    Inbox,
    Message,
    Outbox,
    RedisStreamsPublisher,
    Relay,
    SagaDefinition,
    SagaOrchestrator,
    SagaRecord,
    SagaStep,
    StepContext,
    StreamConsumer,
    event_headers,
)
from edge_kv.origin.testing import RedisServer


@dataclass(frozen=True)
class Tables:
    """Table names of this run (a random suffix, so runs never collide)."""

    suffix: str

    def name(self, what: str) -> str:
        return f"example_{what}_{self.suffix}"

    def ident(self, what: str) -> sql.Identifier:
        return sql.Identifier(self.name(what))


class OrderService:
    def __init__(self, pool: PgPool, redis: aioredis.Redis, tables: Tables) -> None:
        self.pool = pool
        self.tables = tables
        self.outbox = Outbox(tables.name("outbox"))
        self.relay = Relay(self.outbox, pool, RedisStreamsPublisher(redis), poll_interval_s=0.2)
        self.inbox = Inbox(pool, consumer="fulfilment", table=tables.name("inbox"))
        self.sagas = SagaOrchestrator(
            pool,
            [
                SagaDefinition(
                    "fulfil-order",
                    [
                        SagaStep("reserve-stock", self.reserve_stock, self.release_stock, timeout_s=5),
                        SagaStep("charge-card", self.charge_card, self.refund_card, timeout_s=5),
                    ],
                )
            ],
            table=tables.name("sagas"),
            outbox=self.outbox,
        )
        self.consumer = StreamConsumer(
            redis, "orders", "fulfilment", "worker-1", self.on_delivery, block_s=0.2
        )

    async def migrate(self) -> None:
        t = self.tables
        async with self.pool.connection() as conn:
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, amount int NOT NULL, status text NOT NULL)"
                ).format(t.ident("orders"))
            )
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (idem_key text PRIMARY KEY, order_id text NOT NULL, what text NOT NULL)"
                ).format(t.ident("ledger"))
            )
        await self.outbox.migrate(self.pool)
        await self.inbox.migrate()
        await self.sagas.migrate()
        await self.consumer.ensure_group()

    async def drop(self) -> None:
        async with self.pool.connection() as conn:
            for what in ("orders", "ledger", "outbox", "outbox_dead", "inbox", "sagas"):
                await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.tables.ident(what)))

    # 1. the write: state and event in one transaction
    async def place_order(self, order_id: str, amount: int) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, 'placed')").format(self.tables.ident("orders")),
                (order_id, amount),
            )
            await self.outbox.add(
                conn,
                topic="orders",
                key=order_id,
                payload={"type": "order.placed", "order_id": order_id, "amount": amount},
            )

    # 3. the consumer: the inbox makes the order update happen once per event id; the
    #    saga is idempotent on its id, so a redelivery (a crash before the ack) resumes
    #    it instead of starting a second one.
    async def on_delivery(self, delivery: Delivery) -> None:
        message = delivery.message
        if message.payload.get("type") != "order.placed":
            return
        await self.inbox.process(message, self.mark_fulfilling)
        record = await self.sagas.start(
            "fulfil-order",
            message.payload,
            saga_id=f"fulfil-{message.key}",
            correlation_id=message.correlation_id,
            causation_id=message.id,
        )
        status = "fulfilled" if record.status == "completed" else f"cancelled ({record.error})"
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                sql.SQL("UPDATE {} SET status = %s WHERE id = %s AND status = 'fulfilling'").format(
                    self.tables.ident("orders")
                ),
                (status, message.key),
            )
            if cur.rowcount == 1:  # once, even if this event is delivered again
                await self.outbox.add(
                    conn,
                    topic="orders",
                    key=message.key,
                    payload={"type": f"order.{record.status}", "order_id": message.key},
                    headers=event_headers(message.correlation_id, record.last_event_id),
                )

    async def mark_fulfilling(self, conn: psycopg.AsyncConnection[Any], message: Message) -> None:
        await conn.execute(
            sql.SQL("UPDATE {} SET status = 'fulfilling' WHERE id = %s").format(self.tables.ident("orders")),
            (message.key,),
        )

    # 4. the saga's steps: idempotent by ctx.idempotency_key
    async def _ledger(self, ctx: StepContext, what: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING").format(
                    self.tables.ident("ledger")
                ),
                (ctx.idempotency_key, ctx.data["order_id"], what),
            )

    async def reserve_stock(self, ctx: StepContext) -> dict[str, int]:
        await self._ledger(ctx, "stock reserved")
        return {"reserved": 1}

    async def release_stock(self, ctx: StepContext) -> None:
        await self._ledger(ctx, "stock released")

    async def charge_card(self, ctx: StepContext) -> dict[str, int]:
        if ctx.data["amount"] > 1000:
            raise ValueError("card declined")
        await self._ledger(ctx, "card charged")
        return {"charged": ctx.data["amount"]}

    async def refund_card(self, ctx: StepContext) -> None:
        await self._ledger(ctx, "card refunded")

    async def order(self, order_id: str) -> tuple[str, list[str], SagaRecord]:
        async with self.pool.connection() as conn:
            t = self.tables
            row = await (
                await conn.execute(
                    sql.SQL("SELECT status FROM {} WHERE id = %s").format(t.ident("orders")), (order_id,)
                )
            ).fetchone()
            cur = await conn.execute(
                sql.SQL("SELECT what FROM {} WHERE order_id = %s ORDER BY what").format(t.ident("ledger")),
                (order_id,),
            )
            ledger = [str(r[0]) for r in await cur.fetchall()]
        return (str(row[0]) if row else "missing"), ledger, await self.sagas.get(f"fulfil-{order_id}")


async def main(
    redis_url: str | None = None, pg_dsn: str | None = None
) -> dict[str, tuple[str, list[str], str]]:
    """Place two orders (one declined), run relay + consumer until both are settled,
    print and return each order's status, ledger and saga status."""
    dsn = pg_dsn or os.environ.get("PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    async with AsyncExitStack() as stack:
        url = redis_url or os.environ.get("REDIS_URL")
        if url is None:
            url = stack.enter_context(RedisServer().start()).url
        redis = aioredis.Redis.from_url(url)
        stack.push_async_callback(redis.aclose)
        pool = await stack.enter_async_context(PgPool(dsn, size=6))
        service = OrderService(pool, redis, Tables(secrets.token_hex(4)))
        stack.push_async_callback(service.drop)
        await service.migrate()
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(service.relay.run(stop)),
            asyncio.create_task(service.consumer.run(stop)),
        ]
        await service.place_order("o-1", 250)
        await service.place_order("o-2", 5000)  # declined: the stock is released again
        result: dict[str, tuple[str, list[str], str]] = {}
        async with asyncio.timeout(20):
            while len(result) < 2:
                await asyncio.sleep(0.05)
                for oid in ("o-1", "o-2"):
                    try:
                        status, ledger, saga = await service.order(oid)
                    except Exception:
                        continue
                    if status.startswith(("fulfilled", "cancelled")):
                        result[oid] = (status, ledger, saga.status)
            while (await service.outbox.stats(pool)).pending:  # noqa: ASYNC110 (the last events published)
                await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*workers)
        for oid, (status, ledger, saga_status) in sorted(result.items()):
            print(f"{oid}: {status}; saga {saga_status}; ledger {ledger}")
        print("outbox:", await service.outbox.stats(pool))
        return result


if __name__ == "__main__":
    asyncio.run(main())
