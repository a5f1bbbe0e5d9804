"""The inbox: exactly-once *effects* over at-least-once delivery.

An :class:`Inbox` is the existing
:class:`~edge_kv.origin.idempotency.PostgresDeduplicator` (table
``edge_kv_processed_messages``, one row per (consumer, message id)) used as a handler
wrapper: :meth:`Inbox.handler` runs your function in one PostgreSQL transaction that
also inserts the event's id. If the id is already there, the function is not called;
if the function raises, its writes and the inbox row roll back together and the
message is redelivered. So the function's *database* effects happen once per event id,
however often the event is published, redelivered or claimed by another consumer.

What it does not cover: effects outside that transaction (an HTTP call, an email) can
still happen more than once; give them an idempotency key (the event id) instead. The
record expires after ``ttl_s`` (default 7 days): a duplicate arriving later runs again.

``consumer`` names the de-duplication scope: use the consumer *group* name, so every
member of the group shares it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from edge_kv.origin._pg import connection_factory
from edge_kv.origin.idempotency.dedup import PostgresDeduplicator

from .consumer import Delivery, Handler
from .message import Message

__all__ = ["Inbox", "InboxMetrics"]

Effect = Callable[[psycopg.AsyncConnection[Any], Message], Awaitable[None]]


@dataclass
class InboxMetrics:
    processed: int = 0
    duplicates: int = 0


class Inbox:
    """``Inbox(pool, consumer="billing")``; ``db`` as for :class:`~.outbox.Outbox`."""

    def __init__(
        self,
        db: object,
        *,
        consumer: str,
        table: str = "edge_kv_processed_messages",
        ttl_s: float = 7 * 86400,
    ) -> None:
        self.dedup = PostgresDeduplicator(connection_factory(db), consumer=consumer, ttl_s=ttl_s, table=table)
        self.metrics = InboxMetrics()

    async def migrate(self) -> None:
        """Create the inbox table if missing (``PostgresDeduplicator.create_schema``)."""
        await self.dedup.create_schema()

    async def process(self, message: Message, effect: Effect) -> bool:
        """Run ``effect(conn, message)`` in a transaction that records ``message.id``;
        False (and ``effect`` not called) if the id was already recorded."""

        async def run(conn: psycopg.AsyncConnection[Any]) -> None:
            await effect(conn, message)

        outcome = await self.dedup.process_once(message.id, run)
        if outcome.duplicate:
            self.metrics.duplicates += 1
            return False
        self.metrics.processed += 1
        return True

    def handler(self, effect: Effect) -> Handler:
        """A :class:`~.consumer.StreamConsumer` handler running ``effect`` through :meth:`process`."""

        async def handle(delivery: Delivery) -> None:
            await self.process(delivery.message, effect)

        return handle
