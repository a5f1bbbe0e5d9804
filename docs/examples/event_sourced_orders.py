"""An event-sourced order aggregate with one read model (order totals per customer).

    EDGE_KV_PG_DSN=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python docs/examples/event_sourced_orders.py

Creates its tables in a throwaway schema and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from edge_kv.origin.eventsourcing import (
    Aggregate,
    DomainError,
    EventStore,
    PgPool,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    applies,
)

DSN = os.environ.get("EDGE_KV_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


class Order(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.customer = ""
        self.lines: dict[str, int] = {}  # sku -> cents
        self.status = "new"

    # Commands: check the rules, then record what happened.
    def place(self, customer: str) -> None:
        if self.status != "new":
            raise DomainError(f"order {self.id} is already {self.status}")
        self.record("OrderPlaced", {"customer": customer})

    def add_line(self, sku: str, cents: int) -> None:
        if self.status != "placed":
            raise DomainError(f"cannot add to a {self.status} order")
        self.record("LineAdded", {"sku": sku, "cents": cents})

    def ship(self) -> None:
        if not self.lines:
            raise DomainError("nothing to ship")
        self.record("OrderShipped", {})

    # Apply functions: history is fact, they never refuse.
    @applies("OrderPlaced")
    def _placed(self, data: dict[str, Any]) -> None:
        self.customer, self.status = data["customer"], "placed"

    @applies("LineAdded")
    def _line(self, data: dict[str, Any]) -> None:
        self.lines[data["sku"]] = self.lines.get(data["sku"], 0) + data["cents"]

    @applies("OrderShipped")
    def _shipped(self, data: dict[str, Any]) -> None:
        self.status = "shipped"


class CustomerTotals(Projection):
    """Read model: per customer, orders placed and cents ordered."""

    name = "customer_totals"

    def __init__(self, table: str, events_table: str) -> None:
        self.table = table
        self.events_table = events_table
        self.customers: dict[str, str] = {}  # order stream -> customer (a cache of facts)

    async def create(self, conn: psycopg.AsyncConnection[Any], table: str) -> None:
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (customer text PRIMARY KEY, orders int NOT NULL, cents bigint NOT NULL)"
            ).format(sql.Identifier(*table.split(".")))
        )

    async def handle_batch(
        self, conn: psycopg.AsyncConnection[Any], events: Sequence[RecordedEvent], table: str
    ) -> None:
        upsert = sql.SQL(
            "INSERT INTO {} AS t VALUES (%s, %s, %s) ON CONFLICT (customer) DO UPDATE"
            " SET orders = t.orders + EXCLUDED.orders, cents = t.cents + EXCLUDED.cents"
        ).format(sql.Identifier(*table.split(".")))
        for e in events:
            if e.type == "OrderPlaced":
                self.customers[e.stream] = e.data["customer"]
                await conn.execute(upsert, (e.data["customer"], 1, 0))
            elif e.type == "LineAdded":
                await conn.execute(upsert, (await self._customer(conn, e.stream), 0, e.data["cents"]))

    async def _customer(self, conn: psycopg.AsyncConnection[Any], stream: str) -> str:
        # The runner may start mid-history (after a restart): look the order up if needed.
        if stream not in self.customers:
            cur = await conn.execute(
                sql.SQL("SELECT data->>'customer' FROM {} WHERE stream = %s AND version = 1").format(
                    sql.Identifier(*self.events_table.split("."))
                ),
                (stream,),
            )
            row = await cur.fetchone()
            self.customers[stream] = str(row[0]) if row else ""
        return self.customers[stream]


async def main() -> None:
    schema = f"orders_demo_{uuid.uuid4().hex[:8]}"
    async with PgPool(DSN, size=4) as pool:
        async with pool.connection() as conn:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            store = EventStore(pool, table=f"{schema}.events")
            await store.migrate()
            orders = Repository(store, Order, snapshot_every=50)
            totals = CustomerTotals(f"{schema}.customer_totals", store.table)
            async with ProjectionRunner(store, totals, poll_interval=0.5) as runner:
                await orders.execute("o-1", lambda o: o.place("ann"))
                await orders.execute("o-1", lambda o: o.add_line("book", 1_500))
                await orders.execute("o-1", lambda o: o.add_line("pen", 250))
                await orders.execute("o-2", lambda o: o.place("ann"))
                await orders.execute("o-2", lambda o: o.add_line("ink", 900))
                order = await orders.execute("o-1", lambda o: o.ship())
                try:
                    await orders.execute("o-1", lambda o: o.add_line("late", 1))
                except DomainError as exc:
                    print("refused:", exc)
                await runner.wait_for(await store.head())
            print("o-1:", order.status, order.lines)
            async with pool.connection() as conn:
                cur = await conn.execute(
                    sql.SQL("SELECT * FROM {}").format(sql.Identifier(*totals.table.split(".")))
                )
                print("customer_totals:", await cur.fetchall())  # [('ann', 2, 2650)]
        finally:
            async with pool.connection() as conn:
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    asyncio.run(main())
