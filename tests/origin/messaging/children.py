"""Child processes for the kill tests (run as scripts; the parent SIGKILLs them).

python children.py relay    PG_DSN OUTBOX_TABLE REDIS_URL
    publishes one batch, prints "published", then hangs before marking it published.
python children.py consumer PG_DSN INBOX_TABLE EFFECTS_TABLE REDIS_URL STREAM
    consumes with an inbox handler, printing "handled <id>" after each commit.
python children.py saga     PG_DSN SAGA_TABLE EFFECTS_TABLE SAGA_ID KILL_AT FAIL_STEP
    drives a saga and dies (os._exit) at the KILL_AT-th kill point.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from edge_kv.origin._pg import PgPool
from edge_kv.origin.messaging import (
    Delivery,
    Inbox,
    Message,
    Outbox,
    RedisStreamsPublisher,
    Relay,
    StreamConsumer,
)

try:
    from . import saga_steps
except ImportError:  # run as a script
    import saga_steps  # type: ignore[no-redef,import-not-found,unused-ignore]


class _HangAfterPublish:
    def __init__(self, inner: RedisStreamsPublisher) -> None:
        self.inner = inner

    async def publish_many(self, messages: Sequence[Message]) -> list[BaseException | None]:
        results = await self.inner.publish_many(messages)
        print("published", flush=True)
        await asyncio.sleep(3600)  # killed here: published, not yet marked published
        return results


async def relay(dsn: str, table: str, redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    async with PgPool(dsn, size=2) as pool:
        await Relay(Outbox(table), pool, _HangAfterPublish(RedisStreamsPublisher(client))).run_once()


async def consumer(dsn: str, inbox_table: str, effects: str, redis_url: str, stream: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    async with PgPool(dsn, size=2) as pool:
        inbox = Inbox(pool, consumer="group-1", table=inbox_table)

        async def effect(conn: Any, message: Message) -> None:
            await conn.execute(f'INSERT INTO "{effects}" (event_id) VALUES (%s)', (message.id,))

        handler = inbox.handler(effect)

        async def handle(delivery: Delivery) -> None:
            await handler(delivery)
            print("handled", delivery.message.id, flush=True)
            await asyncio.sleep(0.02)

        c = StreamConsumer(client, stream, "group-1", "doomed", handle, batch=20, block_s=0.1)
        await c.ensure_group()
        while True:
            await c.run_once()


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    if kind == "relay":
        asyncio.run(relay(*args))
    elif kind == "consumer":
        asyncio.run(consumer(*args))
    elif kind == "saga":
        asyncio.run(saga_steps.child(*args))
    else:
        os._exit(2)
